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

from fedranklite.core.registry import PluginConfig, Registry


@dataclass(frozen=True)
class RoundOutcome:
    accepted: np.ndarray  # bool per client: its update goes into aggregation
    straggler: np.ndarray  # bool per client: it did not finish its work within the deadline
    round_time: float  # simulated seconds the round lasted


class PolicyParams(PluginConfig):
    """Straggler policies have no parameters yet; a policy that needs some subclasses this."""


class StragglerPolicy:
    """How a deadline treats the clients of one round. Subclasses define `stops_at_deadline` and `late`."""

    name = ""
    stops_at_deadline = False  # clients stop training when their simulated time reaches the deadline

    @classmethod
    def from_config(cls, params: PolicyParams) -> "StragglerPolicy":
        return cls()

    def resolve(
        self, sim_time: np.ndarray, finished: np.ndarray, trained_any: np.ndarray, deadline: Optional[float]
    ) -> RoundOutcome:
        """sim_time: simulated seconds each client spent; finished: it did all its local work;
        trained_any: it completed at least one optimisation step."""
        sim_time = np.asarray(sim_time, dtype=np.float64)
        finished = np.asarray(finished, dtype=bool)
        trained_any = np.asarray(trained_any, dtype=bool)
        slowest = float(sim_time.max()) if sim_time.size else 0.0
        if deadline is None:
            return RoundOutcome(trained_any.copy(), np.zeros_like(finished), slowest)
        straggler = ~finished | (sim_time > deadline)
        return self.late(sim_time, straggler, trained_any, deadline, slowest)

    def late(
        self, sim_time: np.ndarray, straggler: np.ndarray, trained_any: np.ndarray, deadline: float, slowest: float
    ) -> RoundOutcome:
        raise NotImplementedError


STRAGGLER_POLICIES: Registry[type[StragglerPolicy]] = Registry("straggler policy", base=PolicyParams)


@STRAGGLER_POLICIES.register("drop")
class Drop(StragglerPolicy):
    name, stops_at_deadline = "drop", True

    def late(self, sim_time, straggler, trained_any, deadline, slowest) -> RoundOutcome:
        return RoundOutcome(~straggler & trained_any, straggler, deadline if straggler.any() else slowest)


@STRAGGLER_POLICIES.register("wait")
class Wait(StragglerPolicy):
    name, stops_at_deadline = "wait", False

    def late(self, sim_time, straggler, trained_any, deadline, slowest) -> RoundOutcome:
        return RoundOutcome(trained_any.copy(), straggler, slowest)


@STRAGGLER_POLICIES.register("use_partial")
class UsePartial(StragglerPolicy):
    name, stops_at_deadline = "use_partial", True

    def late(self, sim_time, straggler, trained_any, deadline, slowest) -> RoundOutcome:
        return RoundOutcome(trained_any & (sim_time <= deadline), straggler, min(slowest, deadline))
