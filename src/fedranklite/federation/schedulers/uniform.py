"""`uniform`: the honest uniform baseline. Every selected client trains at the same rank: the largest
r in [r_min, r_max] that every selected client can afford,

- within its memory cap (the per-client `hi` of `bounds`: min(r_max, what its tier memory holds)), and
- when a round deadline is set, with every client's predicted round time
  `time_intercept_i + time_per_rank_i * r` within it (the same predictions `cvx` minimises).

If even r_min does not fit every client, everyone gets r_min (which is then capped by memory per client,
as `fixed` is, so no client is handed a rank its memory cannot hold). With `skip_hopeless: true`, a client
predicted to miss the deadline even at r_min is left out when the common rank is chosen: it misses the deadline
at any rank, so holding everyone else at r_min for it buys nothing (under `use_partial` its partial work still
counts). It then trains at the common rank of the others, capped by its memory. Off by default (the rule above).

It ignores the rank budget (r_bar x selected clients): it is the uniform baseline, not a
budget-constrained scheduler, so its total rank may be above or below the budget `fixed`, `cvx` and
`lite` share. Compare it with them knowing that.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedranklite.federation.schedulers.base import SCHEDULERS, Clients, Scheduler, SchedulerParams


class UniformParams(SchedulerParams):
    """Every client trains at the largest rank all selected clients can afford (memory cap; predicted round time
    within the deadline when one is set), else r_min. The uniform baseline: it ignores the rank budget (r_bar)."""

    # leave clients that miss the deadline even at r_min out of the common rank (they miss it at any rank);
    # needs deadline.seconds and a straggler policy that stops them (drop or use_partial, not wait)
    skip_hopeless: bool = False

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = super().problems(cfg)
        if self.skip_hopeless:
            if cfg.deadline.seconds is None:
                out.append(
                    ("skip_hopeless", "needs a round deadline (deadline.seconds); without one nobody is hopeless")
                )
            elif cfg.deadline.straggler_policy.type == "wait":
                out.append(
                    (
                        "skip_hopeless",
                        "under straggler_policy wait a hopeless client trains at the others' common rank to the end "
                        "and lengthens the round; use drop or use_partial",
                    )
                )
        return out


@SCHEDULERS.register("uniform", UniformParams)
class UniformScheduler(Scheduler):
    @classmethod
    def from_config(cls, params: UniformParams, r_max: int, deadline: Optional[float] = None) -> "UniformScheduler":
        return cls(r_max=r_max, deadline=deadline, **params.model_dump(exclude={params.plugin_key, "r_max"}))

    def __init__(
        self,
        r_min: int,
        r_max: int,
        r_bar: float = 8.0,
        deadline: Optional[float] = None,
        skip_hopeless: bool = False,
    ):
        super().__init__(r_min, r_max, r_bar)
        self.deadline = None if deadline is None else float(deadline)
        self.skip_hopeless = bool(skip_hopeless)
        self.last_rank = 0  # the common rank of the last assign (0: no clients)

    def common_rank(self, clients: Clients, hopeless: Optional[np.ndarray] = None) -> int:
        """The largest rank every client can afford, or r_min when none fits; `hopeless` (default: `_hopeless`)
        marks the clients left out of that choice."""
        if len(clients) == 0:
            return 0
        _, hi = self.bounds(clients)
        counted = ~(self._hopeless(clients) if hopeless is None else hopeless)
        r = int(hi[counted].min())  # memory (and r_max) bound of the clients the common rank is chosen for
        if self.deadline is not None:
            slope, intercept = clients.time_per_rank[counted], clients.time_intercept[counted]
            if np.any(intercept > self.deadline):
                return self.r_min
            with np.errstate(divide="ignore", invalid="ignore"):
                # largest r with intercept + slope * r <= deadline; no bound where slope <= 0
                by_time = np.where(slope > 0, np.floor((self.deadline - intercept) / slope), np.inf)
            r_time = float(by_time.min())
            # guard floor against float rounding: step down while the prediction exceeds the deadline
            if np.isfinite(r_time):
                r_int = int(r_time)
                while r_int >= self.r_min and np.any(intercept + slope * r_int > self.deadline):
                    r_int -= 1
                r = min(r, r_int)
        return max(r, self.r_min)

    def _hopeless(self, clients: Clients) -> np.ndarray:
        """Clients predicted to miss the deadline even at r_min, when `skip_hopeless` leaves them out; none when
        every client is (then there is nobody to choose the common rank for, and the rule without it holds)."""
        none = np.zeros(len(clients), dtype=bool)
        if not self.skip_hopeless or self.deadline is None:
            return none
        lo, _ = self.bounds(clients)  # r_min, or less where memory forces it
        hopeless = clients.time_intercept + clients.time_per_rank * lo > self.deadline
        return none if hopeless.all() else hopeless

    def assign(self, clients: Clients) -> np.ndarray:
        self.notes = []
        hopeless = self._hopeless(clients)
        r = self.common_rank(clients, hopeless)
        self.last_rank = r
        if len(clients) == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self.bounds(clients)
        ranks = np.clip(np.full(len(clients), r, dtype=np.int64), lo, hi)
        if hopeless.any():
            self.notes.append(
                f"uniform: {int(hopeless.sum())} client(s) miss the deadline even at r_min={self.r_min}; "
                f"left out of the common rank {r}"
            )
        elif r == self.r_min and not self._fits(clients, r):
            self.notes.append(f"uniform: even r_min={self.r_min} does not fit every client; r_min used")
        return ranks

    def _fits(self, clients: Clients, r: int) -> bool:
        _, hi = self.bounds(clients)
        if np.any(hi < r):
            return False
        if self.deadline is None:
            return True
        return bool(np.all(clients.predicted_time(np.full(len(clients), r)) <= self.deadline))
