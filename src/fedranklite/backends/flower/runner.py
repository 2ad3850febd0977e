"""FlowerRunner: step 3 of the engine's round loop (client training) as Flower messages.

`run(round_idx, global_state, tasks)` sends every client its task and its rank-truncated global adapter
through the Grid, waits for the replies (until all came, the round's wall timeout passed, or the SuperLink
reported the client's SuperNode unavailable), and returns one `ClientResult` per task, in task order.
A client without a reply comes back with no steps and `lost` set (the engine records it as a
straggler); the run goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from fedranklite.backends.flower.task import (
    QUERY_PARTITION,
    TRAIN,
    config_json,
    owner,
    result_from_content,
    state_to_arrays,
    task_record,
    wire_bytes,
)
from fedranklite.federation.ranks import State, truncate
from fedranklite.run.client import ClientResult, TrainSettings
from fedranklite.run.runners import ClientTask, lost_result

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # between pulls from the in-memory Grid of the simulation engine
POLL_SECONDS_REMOTE = 0.1  # between pulls over HTTP from a SuperLink (one small request each)
DEFAULT_TTL = 3600.0


class FlowerRunner:
    """`cfg`: the run's configuration (sent to every ClientApp, which prepares its side from it);
    `settings`: the training settings and `rows` the training rows of each client (both for the planned
    steps of a client that never answers); `grid`: Flower's Grid (`bind` it later if not known yet)."""

    def __init__(self, cfg, settings: TrainSettings, rows: Sequence[int], grid=None):
        self.cfg, self.settings = cfg, settings
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) != cfg.num_clients:
            raise ValueError(f"{len(self.rows)} client row counts for {cfg.num_clients} clients")
        self.cfg_text = config_json(cfg)
        self.round_timeout: Optional[float] = cfg.engine.flower.round_timeout
        self.grid = grid
        self.node_partition: dict[int, tuple[int, int]] = {}  # node id -> (partition id, num partitions)
        # partition id -> the node id whose key was registered for it (deployment with node authentication);
        # None: any node may claim a partition (simulation, or a deployment without authentication)
        self.binding: Optional[dict[int, int]] = None
        self.refused: dict[int, str] = {}  # node id -> why its claim was refused
        self.lost: list[dict] = []  # every lost client-round: {"round", "cid", "reason"}
        self.last_round_wall: float = 0.0
        self.worker_builds: dict[int, int] = {}  # ClientApp process id -> model builds it reported
        self.client_timings: list[dict] = []  # per answered client-round: where its wall time went

    @classmethod
    def factory(cls, cfg, grid=None):
        """A `runner_factory` for `engine.build_engine`: takes from the prepared run only the training
        settings and the partition sizes (the server never tokenises the training rows)."""
        return lambda prepared: cls(cfg, prepared.settings, prepared.plan.rows, grid)

    def bind(self, grid) -> None:
        self.grid = grid

    # ---- which SuperNode holds which client
    def refresh_nodes(self, wait_for: int = 0, timeout: float = 60.0) -> dict[int, int]:
        """Ask new SuperNodes their partition id; return cid -> node id for the nodes online now.

        `wait_for`: wait (up to `timeout` s) until at least that many nodes are connected."""
        deadline = time.monotonic() + timeout
        while True:
            online = set(int(n) for n in self.grid.get_node_ids())
            if len(online) >= wait_for or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        new = sorted(online - set(self.node_partition) - set(self.refused))
        if new:
            msgs = [
                Message(
                    RecordDict({"q": ConfigRecord({"ask": "partition"})}),
                    dst_node_id=n,
                    message_type=QUERY_PARTITION,
                    group_id="partition",
                    ttl=DEFAULT_TTL,
                )
                for n in new
            ]
            replies = self._exchange(msgs, timeout=max(timeout, self.round_timeout or 0))
            claims = {}
            for n, reply in zip(new, replies):
                if reply is None or reply.has_error():
                    why = "no reply" if reply is None else reply.error.reason
                    log.warning("SuperNode %d did not say its partition: %s", n, why)
                    continue
                info = reply.content["node"]
                claims[n] = (int(info["partition-id"]), int(info["num-partitions"]))
            self.accept_claims(claims)
        return self.holders(online)

    def accept_claims(self, claims: dict[int, tuple[int, int]]) -> None:
        """Record each node's claimed (partition id, partition count), or refuse it (`_claim_problem`)."""
        for n, claim in claims.items():
            why = self._claim_problem(n, *claim)
            if why:
                self.refused[n] = why
                log.warning("SuperNode %d refused: %s", n, why)
            else:
                self.node_partition[n] = claim

    def holders(self, online) -> dict[int, int]:
        """cid -> the online node holding its partition (the lowest node id among accepted claimants)."""
        holder: dict[int, int] = {}
        for n in sorted(online):
            if n in self.node_partition:
                pid, num = self.node_partition[n]
                for cid in range(self.cfg.num_clients):
                    if owner(cid, num) == pid:
                        holder.setdefault(cid, n)
        return holder

    def _claim_problem(self, node: int, partition: int, num: int) -> Optional[str]:
        """Why `node` may not hold `partition` (None: it may): with a binding, only the node registered for
        the partition, and only with the deployment's partition count."""
        if self.binding is None:
            return None
        if self.binding.get(partition) != node:
            return f"claims partition {partition}, which is registered to node {self.binding.get(partition)}"
        if num != len(self.binding):
            return f"claims {num} partitions, the deployment has {len(self.binding)}"
        return None

    # ---- the ClientRunner protocol
    def run(self, round_idx: int, global_state: State, tasks: Sequence[ClientTask]) -> list[ClientResult]:
        if self.grid is None:
            raise RuntimeError("FlowerRunner is not bound to a Grid (run it from the ServerApp)")
        start = time.perf_counter()
        holder = self.refresh_nodes()
        out: list[Optional[ClientResult]] = [None] * len(tasks)
        sent: list[tuple[int, ClientTask, int]] = []  # (index in tasks, task, bytes down)
        pushed_at = time.time()
        msgs: list[Message] = []
        for i, t in enumerate(tasks):
            arrays = state_to_arrays(truncate(global_state, t.rank))
            nbytes = wire_bytes(arrays)
            node = holder.get(t.cid)
            if node is None:
                out[i] = self._lost(round_idx, t, 0, "no SuperNode online holds this client")
                continue
            content = RecordDict({"arrays": arrays, "task": task_record(t, round_idx, self.cfg_text)})
            msgs.append(
                Message(content, dst_node_id=node, message_type=TRAIN, group_id=str(round_idx), ttl=DEFAULT_TTL)
            )
            sent.append((i, t, nbytes))
        received: list[float] = [0.0] * len(msgs)  # when each reply came (time.time())
        replies = self._exchange(msgs, timeout=self.round_timeout, received=received)
        for k, ((i, t, nbytes), reply) in enumerate(zip(sent, replies)):
            if reply is None:
                out[i] = self._lost(round_idx, t, nbytes, f"no reply within the round timeout ({self.round_timeout} s)")
            elif reply.has_error():
                out[i] = self._lost(round_idx, t, nbytes, f"error reply: {reply.error.reason}")
            else:
                try:
                    out[i] = result_from_content(reply.content, t, nbytes)
                except (KeyError, ValueError, TypeError, OverflowError) as exc:  # a client's bad reply
                    out[i] = self._lost(round_idx, t, nbytes, f"malformed reply: {type(exc).__name__}: {exc}"[:200])
                    continue
                info = out[i].extra.get("flower", {})
                try:  # diagnostics only: a client's odd values never stop the round
                    if "pid" in info:
                        self.worker_builds[int(info["pid"])] = int(info.get("builds", 0))
                    if "t-handler" in info:
                        self.client_timings.append(client_timing(round_idx, t.cid, info, pushed_at, received[k]))
                except (KeyError, ValueError, TypeError, OverflowError) as exc:
                    log.warning("round %d: client %d sent unreadable timing info: %s", round_idx, t.cid, exc)
        self.last_round_wall = time.perf_counter() - start
        return [r for r in out if r is not None]

    def _lost(self, round_idx: int, task: ClientTask, nbytes: int, reason: str) -> ClientResult:
        log.warning("round %d: client %d is a straggler: %s", round_idx, task.cid, reason)
        self.lost.append({"round": round_idx, "cid": task.cid, "reason": reason})
        planned = self.settings.planned_steps(int(self.rows[task.cid]))
        return lost_result(task, planned, nbytes, reason)

    # ---- push, then pull until every reply came or the timeout passed
    def _exchange(
        self, msgs: list[Message], timeout: Optional[float], received: Optional[list[float]] = None
    ) -> list[Optional[Message]]:
        if not msgs:
            return []
        index: dict[str, int] = {}
        for k, msg in enumerate(msgs):  # one by one: a message the SuperLink refuses leaves no gap in the ids
            for mid in self.grid.push_messages([msg]):
                if mid:
                    index[str(mid)] = k
        replies: list[Optional[Message]] = [None] * len(msgs)
        pending = set(index)
        end = None if timeout is None else time.monotonic() + timeout
        while pending:
            for reply in self.grid.pull_messages(pending):
                mid = str(reply.metadata.reply_to_message_id)
                if mid in pending:
                    replies[index[mid]] = reply
                    pending.discard(mid)
                    if received is not None:
                        received[index[mid]] = time.time()
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(POLL_SECONDS if type(self.grid).__name__ == "InMemoryGrid" else POLL_SECONDS_REMOTE)
        return replies


def client_timing(round_idx: int, cid: int, info: dict, pushed_at: float, received_at: float) -> dict:
    """Where one client-round's wall seconds went, from the server's clock (push, reply) and the ClientApp's
    (`t-*` epochs and `*-s` durations in its reply; one machine, one clock): `to_handler` = delivery (Flower's
    polling), process start and imports before our handler ran; `setup` = building the client side (0 when
    resident); `train`; `back` = the reply's way to the server. In deployment `process_to_handler` is the
    ClientApp process's own start (interpreter, Flower runtime, FAB install, our module import)."""
    t = {k: float(v) for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {
        "round": round_idx,
        "cid": cid,
        "pid": int(info.get("pid", -1)),
        "built": bool(info.get("built")),
        "roundtrip": received_at - pushed_at,
        "to_handler": t["t-handler"] - pushed_at,
        "process_to_handler": t["t-handler"] - t["t-process"],
        "process_to_module": t["t-loaded"] - t["t-process"],
        "setup": t.get("setup-s", 0.0),
        "train": t.get("train-s", 0.0),
        "back": received_at - t["t-reply"],
    }
    out.update({k.removeprefix("setup-"): v for k, v in t.items() if k.startswith("setup-") and k != "setup-s"})
    return out
