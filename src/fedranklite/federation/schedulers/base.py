"""What every rank scheduler sees and returns, and the integer helpers they share.

A scheduler is pure: it maps client descriptions (and what it has observed in earlier rounds) to one
integer rank per selected client. It never touches a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from pydantic import Field

from fedranklite.core.registry import PluginConfig, Registry
from fedranklite.federation.schedulers.minmax import rank_budget


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
        return cls(
            cid,
            _column(max_rank, n, np.int64),
            _column(compute_factor, n, np.float64),
            _column(time_intercept, n, np.float64),
            _column(time_per_rank, n, np.float64),
        )

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
    throughput: np.ndarray  # training samples per simulated compute second on the client's tier (engine step 4)
    missed_deadline: np.ndarray  # bool
    loss_rms: np.ndarray  # root mean square of the client's training-batch losses this round (NaN: unknown)
    samples: np.ndarray  # rows the client trained on this round (NaN: unknown)

    @classmethod
    def of(cls, cid, rank, loss_drop, throughput, missed_deadline=False, loss_rms=np.nan, samples=np.nan) -> "Reports":
        cid = np.asarray(cid, dtype=np.int64).reshape(-1)
        n = cid.size
        return cls(
            cid,
            _column(rank, n, np.int64),
            _column(loss_drop, n, np.float64),
            _column(throughput, n, np.float64),
            _column(missed_deadline, n, bool),
            _column(loss_rms, n, np.float64),
            _column(samples, n, np.float64),
        )

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
    def from_config(cls, params: SchedulerParams, r_max: int, deadline: Optional[float] = None) -> "Scheduler":
        """Built from its config section; `r_max` is the run's resolved maximum rank, `deadline` the round
        deadline in simulated seconds (None: none), which only deadline-aware schedulers take."""
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
