"""A scheduler added the way docs/plugins.md says: this one file, registered by its decorator line.

`toy` gives the first selected client `boost` times the rank of the others (then the shared repair
hands out the exact budget), so a run shows whether the engine used it and its own parameter.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedranklite.federation.schedulers import SCHEDULERS, Clients, Scheduler, SchedulerParams, repair_to_budget


class ToyParams(SchedulerParams):
    boost: float = Field(3.0, gt=0)


@SCHEDULERS.register("toy", ToyParams)
class ToyScheduler(Scheduler):
    def __init__(self, r_min: int, r_max: int, r_bar: float, boost: float = 3.0):
        super().__init__(r_min, r_max, r_bar)
        self.boost = boost

    def assign(self, clients: Clients) -> np.ndarray:
        lo, hi = self.bounds(clients)
        weight = np.ones(len(clients))
        weight[:1] = self.boost
        return repair_to_budget(weight / weight.sum() * self.budget(len(clients)), lo, hi, self.budget(len(clients)))
