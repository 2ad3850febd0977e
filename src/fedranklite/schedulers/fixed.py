"""`fixed`: every selected client trains at the same rank (capped by what its memory holds)."""
from __future__ import annotations

import numpy as np

from .base import SCHEDULERS, Clients, Scheduler


@SCHEDULERS.register("fixed")
class FixedScheduler(Scheduler):
    def __init__(self, r_min: int, r_max: int, r_bar: float, rank: int | None = None, **_):
        super().__init__(r_min, r_max, r_bar)
        self.rank = int(rank if rank is not None else round(r_bar))

    def assign(self, clients: Clients) -> np.ndarray:
        lo, hi = self.bounds(clients)
        return np.clip(np.full(len(clients), self.rank, dtype=np.int64), lo, hi)
