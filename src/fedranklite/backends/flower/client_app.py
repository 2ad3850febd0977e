"""The ClientApp: one client's round with the project's own `client.train_client`.

The model, tokenised rows and partitions stay resident in the process that runs the ClientApp
(`task.client_side`, keyed by the run's config, built by `prepare`, the local engine's set-up path), so a
message costs one local training, not a model build. In Flower's simulation engine that process is a
long-lived Ray actor; in a deployment it is the SuperNode's resident ClientApp worker (worker.py), one
process per SuperNode for every message. This module imports torch, transformers and the rest only inside
the train handler, so loading the app stays cheap wherever Flower starts a process per message (a SuperNode
with `--isolation subprocess`).
"""

from __future__ import annotations

import os
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

LOADED_AT = time.time()  # when this module was imported (in deployment: shortly after the process started)

app = ClientApp()


def _partition(context: Context) -> tuple[int, int]:
    cfg = context.node_config
    if "partition-id" not in cfg or "num-partitions" not in cfg:
        raise ValueError(
            "this SuperNode has no partition: start it with --node-config 'partition-id=<i> num-partitions=<N>'"
        )
    return int(cfg["partition-id"]), int(cfg["num-partitions"])


@app.query("partition")
def query_partition(msg: Message, context: Context) -> Message:
    pid, num = _partition(context)
    return Message(
        RecordDict({"node": ConfigRecord({"partition-id": pid, "num-partitions": num, "pid": os.getpid()})}),
        reply_to=msg,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    handler_at = time.time()
    from fedranklite.backends.flower.task import (
        BUILDS,
        arrays_to_state,
        client_side,
        owner,
        result_content,
        task_from_record,
    )
    from fedranklite.run.client import train_client

    pid, num = _partition(context)
    rec = msg.content["task"]
    task, _round = task_from_record(rec)
    if owner(task.cid, num) != pid:
        raise ValueError(f"client {task.cid} is not held by partition {pid} of {num}")
    builds = BUILDS["count"]
    start = time.perf_counter()
    side = client_side(str(rec["cfg"]))
    setup = time.perf_counter() - start
    download = arrays_to_state(msg.content["arrays"])
    start = time.perf_counter()
    res = train_client(
        side.model,
        download,
        task.cid,
        task.rank,
        side.train,
        side.partitions[task.cid],
        side.settings,
        side.device,
        task.seed,
        task.gate,
    )
    trained = time.perf_counter() - start
    timing = {
        "t-process": _process_start(),
        "t-loaded": LOADED_AT,
        "t-handler": handler_at,
        "setup-s": setup,
        "train-s": trained,
        "built": BUILDS["count"] > builds,
    }
    if timing["built"]:  # the set-up steps of this message (a resident side costs none)
        timing.update({f"setup-{k}": float(v) for k, v in side.timings.items()})
    timing["t-reply"] = time.time()
    return Message(
        result_content(res, {"pid": os.getpid(), "partition-id": pid, "builds": BUILDS["count"], **timing}),
        reply_to=msg,
    )


def _process_start() -> float:
    import psutil

    try:
        return float(psutil.Process().create_time())
    except psutil.Error:
        return float("nan")
