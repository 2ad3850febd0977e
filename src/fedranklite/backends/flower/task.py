"""What travels between the FlowerRunner and the ClientApp, and the ClientApp's resident state.

Tensors travel as raw little-endian bytes packed into one array of an ArrayRecord (`stype="raw"`: no header;
their names, dtypes and shapes in a small JSON layout array beside it), so the bytes counted for a client are
exactly the tensors' payload bytes, equal to the local engine's count for the same tensors. The task (cid,
rank, seed, round, deadline gate) and the run's configuration travel in a ConfigRecord; the telemetry comes
back in a MetricRecord.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from typing import Any, Optional

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedranklite.federation.ranks import State
from fedranklite.run.client import ClientResult
from fedranklite.run.prepare import Prepared, prepare
from fedranklite.run.runners import ClientTask, DeadlineGate

TRAIN = "train"  # message type of a client's local training
QUERY_PARTITION = "query.partition"  # which client partition(s) a SuperNode holds
RAW = "raw"


# ================================================================== tensors <-> ArrayRecord
LAYOUT = "layout"  # the packed record's layout array: JSON [[name, dtype, shape], ...] as bytes
PAYLOAD = "payload"  # the packed record's one payload array: every tensor's raw bytes, in layout order


def state_to_arrays(state: State) -> ArrayRecord:
    """Every tensor's raw little-endian bytes in ONE array (plus a small layout array): Flower moves each
    Array of a message as separate objects, one HTTP request each between the SuperLink, the SuperNode and
    the ClientApp, so one array instead of one per tensor saves ~2 requests per tensor each way."""
    layout, blobs = [], []
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        layout.append([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
        blobs.append(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    payload = b"".join(blobs)
    meta = json.dumps(layout).encode()
    return ArrayRecord(
        array_dict={
            LAYOUT: Array(dtype="uint8", shape=(len(meta),), stype="json", data=meta),
            PAYLOAD: Array(dtype="uint8", shape=(len(payload),), stype=RAW, data=payload),
        },
        keep_input=True,
    )


def arrays_to_state(record: ArrayRecord) -> State:
    if LAYOUT not in record or PAYLOAD not in record or set(record.keys()) != {LAYOUT, PAYLOAD}:
        raise ValueError(f"expected a packed record ({LAYOUT!r} + {PAYLOAD!r}), got {sorted(record.keys())}")
    if record[PAYLOAD].stype != RAW:
        raise ValueError(f"expected a raw payload, got stype {record[PAYLOAD].stype!r}")
    layout = json.loads(bytes(record[LAYOUT].data).decode())
    data = bytearray(record[PAYLOAD].data)
    state: State = {}
    offset = 0
    for name, dtype_name, shape in layout:
        dtype = getattr(torch, str(dtype_name))
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{name}: unknown dtype {dtype_name!r}")
        numel = math.prod(int(d) for d in shape)
        size = numel * torch.empty(0, dtype=dtype).element_size()
        if offset + size > len(data):
            raise ValueError(f"{name}: the payload ends before this tensor")
        flat = torch.frombuffer(data, dtype=dtype, offset=offset, count=numel) if numel else torch.zeros(0, dtype=dtype)
        state[str(name)] = flat.reshape(tuple(int(d) for d in shape)).clone()
        offset += size
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} payload bytes no tensor claims")
    return state


def wire_bytes(record: ArrayRecord) -> int:
    """Payload bytes of the tensors in a record (what they cost on the wire; the layout is not counted)."""
    return int(len(record[PAYLOAD].data)) if PAYLOAD in record else 0


# ================================================================== the task <-> ConfigRecord
def config_json(cfg) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_record(task: ClientTask, round_idx: int, cfg_text: str) -> ConfigRecord:
    rec: dict[str, Any] = {
        "cid": int(task.cid),
        "rank": int(task.rank),
        "seed": str(int(task.seed)),
        "round": int(round_idx),
        "cfg": cfg_text,
        "cfg-hash": config_hash(cfg_text),
        "has-gate": task.gate is not None,
    }
    if task.gate is not None:
        g = task.gate
        rec.update(
            {
                "gate-deadline": float(g.deadline),
                "gate-comm": float(g.comm_seconds),
                "gate-compute-factor": float(g.compute_factor),
                "gate-mode": g.mode,
                "gate-sec-per-step": float(g.sec_per_step),
            }
        )
    return ConfigRecord(rec)


def task_from_record(rec: ConfigRecord) -> tuple[ClientTask, int]:
    gate = None
    if rec["has-gate"]:
        gate = DeadlineGate(
            float(rec["gate-deadline"]),
            float(rec["gate-comm"]),
            float(rec["gate-compute-factor"]),
            str(rec["gate-mode"]),
            float(rec["gate-sec-per-step"]),
        )
    # the seed is a uint32 but ConfigRecord ints are signed 64-bit: sent as a string, exactly
    return ClientTask(int(rec["cid"]), int(rec["rank"]), int(rec["seed"]), gate), int(rec["round"])


# ================================================================== the result <-> reply content
TELEMETRY = (
    "num_samples",
    "steps",
    "planned_steps",
    "loss_before",
    "loss_after",
    "wall_seconds",
    "peak_memory_mb",
    "loss_rms",
)


def result_content(res: ClientResult, info: Optional[dict] = None) -> RecordDict:
    metrics = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in ((k, getattr(res, k)) for k in TELEMETRY)}
    return RecordDict(
        {
            "update": state_to_arrays(res.update),
            "telemetry": MetricRecord(metrics),
            "info": ConfigRecord({"cid": int(res.cid), "rank": int(res.rank), **(info or {})}),
        }
    )


def _count(t, name: str) -> int:
    """A telemetry count as an int; a client's NaN, inf or fraction is a malformed reply (ValueError)."""
    value = float(t[name])
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{name} is {value!r}")
    return int(value)


def result_from_content(content: RecordDict, task: ClientTask, bytes_down: int) -> ClientResult:
    """A client's reply as a ClientResult. Raises (KeyError, ValueError, TypeError) on a malformed reply:
    the runner makes such a client a straggler, never the round's crash. A count <= 0 passes here and is
    rejected by the server's checks (validation.sample_problem)."""
    update_rec = content["update"]
    t = content["telemetry"]
    info = dict(content["info"]) if "info" in content else {}
    wall = float(t["wall_seconds"])
    if not math.isfinite(wall) or wall < 0:
        raise ValueError(f"wall_seconds is {wall!r}")
    return ClientResult(
        cid=task.cid,
        rank=task.rank,
        update=arrays_to_state(update_rec),
        num_samples=_count(t, "num_samples"),
        steps=_count(t, "steps"),
        planned_steps=_count(t, "planned_steps"),
        loss_before=float(t["loss_before"]),
        loss_after=float(t["loss_after"]),
        wall_seconds=wall,
        peak_memory_mb=float(t["peak_memory_mb"]),
        loss_rms=float(t["loss_rms"]) if "loss_rms" in t else float("nan"),
        bytes_down=bytes_down,
        bytes_up=wire_bytes(update_rec),
        extra={"flower": {k: v for k, v in info.items() if k not in ("cid", "rank")}},
    )


# ================================================================== the ClientApp's resident state
_RESIDENT: dict[str, Prepared] = {}
_LOCK = threading.Lock()
BUILDS = {"count": 0}  # how many times this process built a client side (tests check the model stays resident)


def client_side(cfg_text: str) -> Prepared:
    """The run's prepared client side (model, partitions, tokenised training rows), built once per worker
    process by the same `prepare` path as the local engine's, so a client's frozen backbone, partitions
    and token ids are those of the local engine. Its evaluation split is never tokenised here."""
    key = config_hash(cfg_text)
    with _LOCK:
        side = _RESIDENT.get(key)
        if side is None:
            side = _build(cfg_text)
            _RESIDENT.clear()  # one run at a time per worker: drop a previous run's model
            _RESIDENT[key] = side
            BUILDS["count"] += 1
        return side


def _build(cfg_text: str) -> Prepared:
    from fedranklite.config.schema import Config

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    start = time.perf_counter()
    cfg = Config.model_validate(json.loads(cfg_text))  # validated on the server already
    if cfg.model.name.startswith(("bundled:", "tiny:")):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parsed = time.perf_counter()
    side = prepare(cfg)
    side.train  # noqa: B018  (tokenise now, through the token cache: the set-up, not the first round, pays)
    side.timings["config_parse"] = parsed - start
    return side


def owner(cid: int, num_partitions: int) -> int:
    """The partition id (SuperNode) that holds client `cid` when there are `num_partitions` SuperNodes."""
    return int(cid) % int(num_partitions)
