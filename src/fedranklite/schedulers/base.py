"""What every rank scheduler sees and returns, and the integer helpers they share.

A scheduler is pure: it maps client descriptions (and what it has observed in earlier rounds) to one
integer rank per selected client. It never touches a model.
"""
from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from pydantic import Field

from ..registry import PluginConfig, Registry


def _column(value: Any, n: int, dtype) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    return np.full(n, arr, dtype=dtype) if arr.ndim == 0 else arr


@dataclass(frozen=True)
class Clients:
    """The selected clients as the scheduler sees them this round: one array per attribute, so that
    a scheduler is vectorised over 100,000 clients as easily as over 10."""

    cid: np.ndarray  # int ids
    max_rank: np.ndarray  # min(r_max, what the client's tier memory can hold)
    compute_factor: np.ndarray
    # Predicted round time of client i at rank r: time_intercept[i] + time_per_rank[i] * r (seconds)
    time_intercept: np.ndarray
    time_per_rank: np.ndarray

    @classmethod
    def of(cls, cid, max_rank=1 << 30, compute_factor=1.0, time_intercept=0.0, time_per_rank=0.0) -> "Clients":
        cid = np.asarray(cid, dtype=np.int64).reshape(-1)
        n = cid.size
        return cls(cid, _column(max_rank, n, np.int64), _column(compute_factor, n, np.float64),
                   _column(time_intercept, n, np.float64), _column(time_per_rank, n, np.float64))

    def __len__(self) -> int:
        return int(self.cid.size)

    def predicted_time(self, ranks: np.ndarray) -> np.ndarray:
        return self.time_intercept + self.time_per_rank * np.asarray(ranks, dtype=np.float64)


@dataclass(frozen=True)
class Reports:
    """What the finished round told the scheduler (step 8), one entry per client that reported."""

    cid: np.ndarray
    rank: np.ndarray
    loss_drop: np.ndarray  # loss before local training minus loss after (positive = it learned)
    throughput: np.ndarray  # training samples per measured second
    missed_deadline: np.ndarray  # bool

    @classmethod
    def of(cls, cid, rank, loss_drop, throughput, missed_deadline=False) -> "Reports":
        cid = np.asarray(cid, dtype=np.int64).reshape(-1)
        n = cid.size
        return cls(cid, _column(rank, n, np.int64), _column(loss_drop, n, np.float64),
                   _column(throughput, n, np.float64), _column(missed_deadline, n, bool))

    def __len__(self) -> int:
        return int(self.cid.size)


class SchedulerParams(PluginConfig):
    """Parameters every scheduler shares; a scheduler with its own adds them in a subclass next to it."""

    r_min: int = Field(2, ge=1)
    r_max: Optional[int] = Field(None, ge=1)  # defaults to model.lora.r_max
    r_bar: float = Field(8.0, gt=0)  # mean rank per selected client: budget = r_bar * num_selected

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        """The bounds against the rank the adapters carry (model.lora.r_max)."""
        out = []
        lora_r_max = cfg.model.lora.r_max
        if self.r_max is not None and self.r_max > lora_r_max:
            out.append(("r_max", f"{self.r_max} exceeds model.lora.r_max={lora_r_max}, the rank the adapters carry"))
        r_max = self.r_max or lora_r_max
        if self.r_min > r_max:
            out.append(("r_min", f"r_min={self.r_min} is greater than r_max={r_max}"))
        if not (self.r_min <= self.r_bar <= r_max):
            out.append(("r_bar", f"r_bar={self.r_bar} must lie within [r_min={self.r_min}, r_max={r_max}]"))
        return out


class Scheduler(ABC):
    @classmethod
    def from_config(cls, params: SchedulerParams, r_max: int) -> "Scheduler":
        """Built from its config section; `r_max` is the run's resolved maximum rank."""
        kwargs = params.model_dump(exclude={params.plugin_key, "r_max"})
        return cls(r_max=r_max, **kwargs)

    def __init__(self, r_min: int, r_max: int, r_bar: float):
        self.r_min, self.r_max, self.r_bar = int(r_min), int(r_max), float(r_bar)
        self.notes: list[str] = []  # human-readable remarks of the last assign (e.g. "greedy fallback")

    @abstractmethod
    def assign(self, clients: Clients) -> np.ndarray:
        """One integer rank per client, in the order given."""

    def observe(self, reports: Reports) -> None:
        """Learn from the finished round. Stateless schedulers ignore it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ---- shared helpers ----
    def bounds(self, clients: Clients) -> tuple[np.ndarray, np.ndarray]:
        """Per-client [lo, hi]: hi = min(r_max, memory cap); lo = r_min unless memory forces less."""
        hi = np.minimum(clients.max_rank, self.r_max)
        lo = np.minimum(self.r_min, hi)
        return lo, hi

    def budget(self, n: int) -> int:
        return rank_budget(self.r_bar, n)


SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler", base=SchedulerParams)


def rank_budget(r_bar: float, num_selected: int) -> int:
    """Total rank handed out in a round: r_bar per selected client, rounded to an integer."""
    return int(round(r_bar * num_selected))


def feasible_budget(budget: int, lo: np.ndarray, hi: np.ndarray) -> int:
    """The budget clipped to what the bounds allow (a memory-capped round may not reach it)."""
    low, high = int(lo.sum()), int(hi.sum())
    return low if budget < low else high if budget > high else int(budget)


def repair_to_budget(ideal: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> np.ndarray:
    """Round `ideal` into [lo, hi] integers that sum exactly to `budget` (clipped to the feasible range).

    Start from clamp(round(ideal)); while the sum is short, add one rank to the clients whose ideal
    exceeds their rank the most (among those below hi); while it is over, take one from those whose
    rank exceeds their ideal the most (among those above lo). Each pass is O(N) (argpartition, no
    sort) and either closes the gap or moves every eligible client by one, so a client is moved at
    most hi - lo times and there are at most max(hi - lo) + 1 <= r_max - r_min + 1 passes, whatever
    N is: O(N * (r_max - r_min + 1)). `repair_with_passes` also returns the number of passes.
    """
    return repair_with_passes(ideal, lo, hi, budget)[0]


def repair_with_passes(ideal: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """`repair_to_budget` plus the number of correction passes it made (for tests and benchmarks)."""
    ideal = np.asarray(ideal, dtype=np.float64)
    lo, hi = np.asarray(lo), np.asarray(hi)
    ranks = np.rint(ideal).astype(np.int64)
    np.minimum(np.maximum(ranks, lo, out=ranks), hi, out=ranks)  # clamp; np.clip is ~5x slower here
    budget = feasible_budget(budget, lo, hi)
    gap = budget - int(ranks.sum())
    passes = 0
    while gap != 0:
        passes += 1
        if gap > 0:
            eligible = np.flatnonzero(ranks < hi)
            priority = ideal[eligible] - ranks[eligible]
        else:
            eligible = np.flatnonzero(ranks > lo)
            priority = ranks[eligible] - ideal[eligible]
        k = min(abs(gap), eligible.size)
        # the k most deserving (largest priority), found in O(N) by argpartition (no full sort)
        chosen = eligible if k == eligible.size else eligible[np.argpartition(-priority, k - 1)[:k]]
        ranks[chosen] += 1 if gap > 0 else -1
        gap -= k if gap > 0 else -k
    return ranks, passes


def greedy_min_max(intercept: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   budget: int) -> np.ndarray:
    """Integer ranks in [lo, hi] summing to `budget` that minimise max_i (intercept_i + slope_i * r_i).

    Water-filling: start every client at lo and hand out the remaining ranks one at a time to the
    client whose time after the increment is smallest. For this separable problem with increasing
    linear times the greedy is optimal for the max (exchange argument). O(N + B log N) with a heap.
    """
    ranks = np.array(lo, dtype=np.int64)
    budget = feasible_budget(budget, lo, hi)
    remaining = budget - int(ranks.sum())
    heap = [(float(intercept[i] + slope[i] * (ranks[i] + 1)), int(i)) for i in np.flatnonzero(ranks < hi)]
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        ranks[i] += 1
        remaining -= 1
        if ranks[i] < hi[i]:
            heapq.heappush(heap, (float(intercept[i] + slope[i] * (ranks[i] + 1)), i))
    return ranks
