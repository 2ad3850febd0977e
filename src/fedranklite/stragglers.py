"""Round deadlines: what happens to clients that do not finish in time (pure, no model).

Each policy says whether a client should stop training when its simulated time reaches the deadline
(`stops_at_deadline`) and, once every client has reported, which updates are accepted, who was a
straggler and how long the round lasted in simulated seconds.

- drop:        a client that cannot finish by the deadline is stopped there and its update discarded;
               the round lasts until the deadline if anyone was late, else until the slowest client.
- wait:        nobody is stopped or discarded; the round lasts as long as the slowest client. Clients
               past the deadline are still counted as stragglers (the round is not compliant).
- use_partial: a client that cannot finish stops before the deadline and contributes the update from
               the steps that fit (weighted by the samples it actually trained on); a client that fit
               no step contributes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .registry import Registry


@dataclass(frozen=True)
class RoundOutcome:
    accepted: np.ndarray  # bool per client: its update goes into aggregation
    straggler: np.ndarray  # bool per client: it did not finish its work within the deadline
    round_time: float  # simulated seconds the round lasted


@dataclass(frozen=True)
class StragglerPolicy:
    name: str
    stops_at_deadline: bool

    def resolve(self, sim_time: np.ndarray, finished: np.ndarray, trained_any: np.ndarray,
                deadline: Optional[float]) -> RoundOutcome:
        """sim_time: simulated seconds each client spent; finished: it did all its local work;
        trained_any: it completed at least one optimisation step."""
        sim_time = np.asarray(sim_time, dtype=np.float64)
        finished = np.asarray(finished, dtype=bool)
        trained_any = np.asarray(trained_any, dtype=bool)
        slowest = float(sim_time.max()) if sim_time.size else 0.0
        if deadline is None:
            return RoundOutcome(trained_any.copy(), np.zeros_like(finished), slowest)
        straggler = ~finished | (sim_time > deadline)
        if self.name == "wait":
            return RoundOutcome(trained_any.copy(), straggler, slowest)
        if self.name == "drop":
            return RoundOutcome(~straggler & trained_any, straggler, deadline if straggler.any() else slowest)
        if self.name == "use_partial":
            return RoundOutcome(trained_any & (sim_time <= deadline), straggler, min(slowest, deadline))
        raise ValueError(f"policy {self.name!r} has no resolve rule")


STRAGGLER_POLICIES: Registry[StragglerPolicy] = Registry("straggler policy")
for _policy in (StragglerPolicy("drop", True), StragglerPolicy("wait", False), StragglerPolicy("use_partial", True)):
    STRAGGLER_POLICIES.register(_policy.name)(_policy)
