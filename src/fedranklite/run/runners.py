"""Step 3 of the round loop: what a backend's runner receives (one `ClientTask` per client, with the
`DeadlineGate` that is the client's clock) and returns (`ClientResult`s), and the local runner.

The local runner trains the clients in this process, one after another, on one resident model; the
Flower runner (flower/runner.py) sends the same tasks as messages; the surrogate runner (surrogate.py)
replaces training by a calibrated model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from fedranklite.federation.ranks import State
from fedranklite.run.client import ClientResult, train_client
from fedranklite.run.prepare import Prepared


@dataclass(frozen=True)
class DeadlineGate:
    """Decides before each local step whether the step still fits in the round deadline (simulated
    seconds). Plain data, so it can travel to a remote client in a message."""

    deadline: float
    comm_seconds: float
    compute_factor: float
    mode: str  # the timing mode: "measured" times steps as they run, the others price them (sec_per_step)
    sec_per_step: float = 0.0  # analytic: simulated seconds of one full batch at this rank

    def __call__(self, steps_done: int, wall_seconds: float) -> bool:
        if self.mode != "measured":
            return self.comm_seconds + (steps_done + 1) * self.sec_per_step <= self.deadline
        if steps_done == 0:
            return self.comm_seconds < self.deadline
        per_step = wall_seconds / steps_done
        return self.comm_seconds + (wall_seconds + per_step) / self.compute_factor <= self.deadline


@dataclass(frozen=True)
class ClientTask:
    cid: int
    rank: int
    seed: int
    gate: Optional[DeadlineGate] = None


class ClientRunner(Protocol):
    def run(self, round_idx: int, global_state: State, tasks: Sequence[ClientTask]) -> list[ClientResult]: ...


class LocalRunner:
    """Step 3 in this process: one resident model, clients trained one after another."""

    def __init__(self, prepared: Prepared):
        self.model, self.train, self.partitions = prepared.model, prepared.train, prepared.partitions
        self.settings, self.device = prepared.settings, prepared.device

    def run(self, round_idx: int, global_state: State, tasks: Sequence[ClientTask]) -> list[ClientResult]:
        return [
            train_client(
                self.model,
                global_state,
                t.cid,
                t.rank,
                self.train,
                self.partitions[t.cid],
                self.settings,
                self.device,
                t.seed,
                t.gate,
            )
            for t in tasks
        ]


def client_seed(seed: int, round_idx: int, cid: int) -> int:
    """A seed for one (round, client): independent of execution order and process."""
    return int(np.random.SeedSequence([seed, round_idx, cid]).generate_state(1)[0])


# step 3 for `build_engine`: a runner built from the prepared run (LocalRunner itself is one)
RunnerFactory = Callable[[Prepared], ClientRunner]


def lost_result(task: ClientTask, planned_steps: int, bytes_down: int, reason: str) -> ClientResult:
    """A client that never answered (it was unavailable this round; or, on Flower, a timeout, a dead
    SuperNode, a failed ClientApp): no steps, not finished, no update. The engine records it as a straggler
    (`lost` in rounds.jsonl)."""
    return ClientResult(
        cid=task.cid,
        rank=task.rank,
        update={},
        num_samples=0,
        steps=0,
        planned_steps=planned_steps,
        loss_before=float("nan"),
        loss_after=float("nan"),
        wall_seconds=0.0,
        peak_memory_mb=0.0,
        bytes_down=bytes_down,
        bytes_up=0,
        lost=reason,
    )
