"""`fixed`: every selected client trains at the same rank (capped by what its memory holds)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from pydantic import Field

from fedranklite.federation.schedulers.base import SCHEDULERS, Clients, Scheduler, SchedulerParams


class FixedParams(SchedulerParams):
    rank: Optional[int] = Field(None, ge=1)  # the rank for everyone (defaults to r_bar)

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        out = super().problems(cfg)
        r_max = self.r_max or cfg.model.lora.r_max
        if self.rank is not None and not (self.r_min <= self.rank <= r_max):
            out.append(("rank", f"rank={self.rank} must lie within [r_min={self.r_min}, r_max={r_max}]"))
        return out


@SCHEDULERS.register("fixed", FixedParams)
class FixedScheduler(Scheduler):
    def __init__(self, r_min: int, r_max: int, r_bar: float, rank: int | None = None):
        super().__init__(r_min, r_max, r_bar)
        self.rank = int(rank if rank is not None else round(r_bar))

    def assign(self, clients: Clients) -> np.ndarray:
        lo, hi = self.bounds(clients)
        return np.clip(np.full(len(clients), self.rank, dtype=np.int64), lo, hi)
