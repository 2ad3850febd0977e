"""Atomic per-round checkpoints, so a killed run continues with `--resume` exactly where it stopped.

A checkpoint holds everything that changes from round to round: the global adapter (LoRA factors and
head), the scheduler's state (EMAs, deadline misses), the time model's calibration, the RNG states,
the round records so far, the resolved config (a resume with a different config is refused) and the
fingerprints of the inputs the results depend on (fingerprint.py: a resume whose inputs changed is refused).
Client optimizers are created fresh every round, so there is no client optimizer state to keep; the server
optimizer's (momentum, Adam moments) is.

The file, `checkpoint.safetensors` (format 3), is a safetensors file: no pickle is written or read, so
loading it can never run code. Its tensors are the global adapter (`global_state/<name>`), torch's CPU RNG
state (`rng_torch`, uint8) and, when the run has a server optimizer with state (`federation.server_optimizer`
momentum or adam), its buffers (`server_optimizer/<buffer>/<name>`, float64); its header's metadata holds

    format: "fedranklite-checkpoint", format_version: "3",
    sha256: hex digest of the meta text and every tensor (see `digest`),
    meta:   one JSON string: round_idx, sim_time, reached_at, records, scheduler, time_model, telemetry,
            the numpy RNG state (a plain list), the config and the input fingerprints

The checksum catches a damaged or edited file (it is not a signature: whoever can write the file can
recompute it), so the contents are checked as well: every key present, the adapter's keys, shapes and
dtypes equal to the model's and finite (`check_adapter`). Every problem is one `ResumeError` line.
Checkpoints of earlier versions (`checkpoint.pt`, torch's pickle-based format) are not read: the message
says so and that the run must be started afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fedranklite.config.files import flatten
from fedranklite.core.messages import one_line
from fedranklite.run.folder_lock import FolderInUse, busy_message, holder

CHECKPOINT_NAME = "checkpoint.safetensors"
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"  # formats 1 and 2 (torch.save, pickle-based): recognised, never loaded
FORMAT_VERSION = 3
FORMAT_TAG = "fedranklite-checkpoint"
STATE_PREFIX, RNG_TENSOR = "global_state/", "rng_torch"
# the server optimizer's buffers (federation/server_optimizer.py), present only when it has state: a run without
# one writes exactly the tensors (and checksum) it wrote before the option existed
SERVER_OPTIMIZER_PREFIX = "server_optimizer/"
META_KEYS = ("round_idx", "sim_time", "reached_at", "records", "scheduler", "time_model", "telemetry", "rng", "config")
# written when the run has them, absent from some checkpoints (read as None)
OPTIONAL_META_KEYS = ("initial_eval", "fingerprints", "accepted_changes")
# where a results folder lives, not what the run computes: a copied or renamed folder still resumes
MOVABLE_KEYS = ("output_dir", "experiment_name")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


class ResumeError(RuntimeError):
    """A run that cannot be resumed as asked (the message is one line)."""


# ---- RNG states as plain data
def rng_state() -> dict[str, Any]:
    """torch's state as a uint8 tensor, numpy's legacy MT19937 state as plain JSON values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = np.array(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["name"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))


# ---- the file
def _plain(obj: Any) -> Any:
    """json.dumps's fallback: numpy values as Python values (NaN kept: the records and EMAs hold NaN)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable in a checkpoint: {type(obj).__name__}")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def digest(
    meta: str,
    global_state: dict[str, torch.Tensor],
    rng_torch: torch.Tensor,
    server_optimizer: Optional[dict[str, torch.Tensor]] = None,
) -> str:
    """SHA-256 over a canonical serialisation: the meta JSON, then every tensor (sorted by name) as name,
    dtype, shape and raw bytes, each length-prefixed so no two payloads share a byte stream. The server
    optimizer's tensors follow the RNG state under their prefixed names (none: the digest of earlier versions)."""
    h = hashlib.sha256()

    def put(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    put(f"fedranklite-checkpoint-{FORMAT_VERSION}".encode())
    put(meta.encode("utf-8"))
    extra = [(SERVER_OPTIMIZER_PREFIX + k, v) for k, v in sorted((server_optimizer or {}).items())]
    for name, t in [*sorted(global_state.items()), ("<rng_torch>", rng_torch), *extra]:
        put(name.encode("utf-8"))
        put(str(t.dtype).encode())
        put(json.dumps(list(t.shape)).encode())
        put(_tensor_bytes(t))
    return h.hexdigest()


def encode_payload(payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An engine payload (see Engine.checkpoint_payload) -> (tensors, metadata) of the safetensors file."""
    rng = payload["rng"]
    meta = {k: payload[k] for k in META_KEYS if k != "rng"}
    meta.update({k: payload[k] for k in OPTIONAL_META_KEYS if payload.get(k) is not None})
    meta["rng"] = {"numpy": rng["numpy"]}
    text = json.dumps(meta, default=_plain, sort_keys=True, allow_nan=True)
    state = {str(k): v.detach().cpu().contiguous() for k, v in payload["global_state"].items()}
    rng_torch = rng["torch"].detach().cpu().contiguous()
    server = {str(k): v.detach().cpu().contiguous() for k, v in (payload.get("server_optimizer") or {}).items()}
    tensors = {STATE_PREFIX + k: v for k, v in state.items()}
    tensors[RNG_TENSOR] = rng_torch
    tensors.update({SERVER_OPTIMIZER_PREFIX + k: v for k, v in server.items()})
    metadata = {
        "format": FORMAT_TAG,
        "format_version": str(FORMAT_VERSION),
        "sha256": digest(text, state, rng_torch, server),
        "meta": text,
    }
    return tensors, metadata


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write the checkpoint to a temporary file in the same folder, fsync, then rename over the old one."""
    write_bytes_atomic(path, to_bytes(*encode_payload(payload)))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """`data` written atomically (temporary file, fsync, rename, then the folder fsynced): a reader sees the old
    file or the new one, never a part; a failed write (full disk) leaves the old file and no temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # a folder made read-only mid-write: the next run's start removes it
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(
    folder: str | Path, names: tuple[str, ...] = (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME)
) -> list[Path]:
    """Delete the `.NAME.*.tmp` files a killed writer left behind (only ours: the atomic writers' pattern)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _refuse(path: Path, what: str) -> ResumeError:
    return ResumeError(f"{path}: {what}; cannot resume from it (start afresh with --overwrite)")


def legacy_message(path: Path) -> ResumeError:
    return ResumeError(
        f"{path}: a checkpoint of an earlier FedRankLite version (torch's pickle-based format, which this version "
        f"no longer reads: loading it means unpickling); rerun the experiment from the start with --overwrite"
    )


def _header(path: Path, data: bytes) -> dict:
    """The safetensors JSON header of `data`, or one ResumeError saying what the file is instead."""
    if data[:4] == b"PK\x03\x04" or data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        if path.name == LEGACY_CHECKPOINT_NAME:
            raise legacy_message(path)
        raise _refuse(path, "not a FedRankLite checkpoint: a torch/pickle file, which is never loaded")
    if not data:
        raise _refuse(path, "unreadable checkpoint: 0 bytes (emptied by a crash or a full disk?)")
    if len(data) < 8:
        raise _refuse(path, f"not a FedRankLite checkpoint ({len(data)} bytes, not a safetensors file)")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > MAX_HEADER_BYTES:
        raise _refuse(path, "not a FedRankLite checkpoint (not a safetensors file)")
    if n > len(data) - 8:
        raise _refuse(path, f"unreadable checkpoint: truncated ({len(data)} bytes, its header alone needs {n + 8})")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _refuse(path, "not a FedRankLite checkpoint (its safetensors header is not JSON)") from None
    if not isinstance(header, dict):
        raise _refuse(path, "not a FedRankLite checkpoint (its safetensors header is not an object)")
    return header


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file -> the engine payload (the inverse of `encode_payload`). Every problem is one
    ResumeError line; nothing in the file is executed (safetensors holds tensors and strings only). A checkpoint
    in a results folder that another run holds (folder_lock.py) is refused with FolderInUse: that run replaces it
    every round, and resuming it would make two writers of one folder."""
    path = Path(path)
    pid = holder(path.parent) if path.parent.is_dir() else None
    if pid is not None:
        raise FolderInUse(busy_message(path.parent, pid))
    if not path.exists() and not path.is_symlink():
        legacy = path.with_name(LEGACY_CHECKPOINT_NAME)
        if path.name == CHECKPOINT_NAME and legacy.is_file():
            raise legacy_message(legacy)
        raise ResumeError(f"no checkpoint at {path}: nothing to resume (run without --resume to start)")
    if not path.is_file():
        raise _refuse(path, "not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    header = _header(path, data)
    info = header.get("__metadata__")
    if not isinstance(info, dict) or info.get("format") != FORMAT_TAG:
        raise _refuse(path, "not a FedRankLite checkpoint (a safetensors file without its metadata)")
    odd = [k for k, v in info.items() if not isinstance(v, str)]
    if odd:
        raise _refuse(path, f"metadata '{one_line(str(odd[0]), 40)}' is not a string")
    version = info.get("format_version")
    if version != str(FORMAT_VERSION):
        raise _refuse(path, f"checkpoint format {one_line(repr(version), 40)} is not {FORMAT_VERSION}")
    for key in ("sha256", "meta"):
        if key not in info:
            raise _refuse(path, f"missing key '{key}'")
    try:
        from safetensors.torch import load

        tensors = load(data)
    except Exception as exc:  # safetensors' own error for bad offsets, dtypes, overlaps
        raise _refuse(
            path, f"unreadable checkpoint, damaged ({type(exc).__name__}: {one_line(str(exc), 80)})"
        ) from None
    if RNG_TENSOR not in tensors:
        raise _refuse(path, f"missing tensor '{RNG_TENSOR}'")
    rng_torch = tensors.pop(RNG_TENSOR)
    foreign = [k for k in tensors if not k.startswith((STATE_PREFIX, SERVER_OPTIMIZER_PREFIX))]
    if foreign:
        raise _refuse(path, f"unexpected tensor '{one_line(foreign[0], 60)}'")
    state = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    server = {k[len(SERVER_OPTIMIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SERVER_OPTIMIZER_PREFIX)}
    if rng_torch.dtype != torch.uint8 or rng_torch.dim() != 1:
        raise _refuse(path, "rng_torch is not a uint8 vector (torch's RNG state)")
    if digest(info["meta"], state, rng_torch, server) != info["sha256"]:
        raise _refuse(path, "checksum mismatch (SHA-256): the file was damaged or changed after it was written")
    try:
        meta = json.loads(info["meta"])
    except ValueError as exc:
        raise _refuse(path, f"meta is not JSON ({one_line(str(exc), 80)})") from None
    if not isinstance(meta, dict):
        raise _refuse(path, f"meta is a {type(meta).__name__}, not an object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise _refuse(
            path, f"missing key '{missing[0]}'" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    problem = _meta_problem(meta)
    if problem:
        raise _refuse(path, problem)
    return {
        **{k: meta[k] for k in META_KEYS if k != "rng"},
        **{k: meta.get(k) for k in OPTIONAL_META_KEYS},
        "global_state": state,
        "rng": {"torch": rng_torch, "numpy": meta["rng"]["numpy"]},
        "server_optimizer": server,
    }


def _meta_problem(meta: dict) -> Optional[str]:
    """The first thing in the checkpoint's JSON part that cannot be resumed from, or None."""
    r = meta["round_idx"]
    if not isinstance(r, int) or isinstance(r, bool) or r < 0:
        return f"round_idx {one_line(repr(r), 40)} is not a round count"
    if not isinstance(meta["sim_time"], (int, float)) or not math.isfinite(meta["sim_time"]):
        return f"sim_time {one_line(repr(meta['sim_time']), 40)} is not a finite number"
    if meta["reached_at"] is not None and not isinstance(meta["reached_at"], int):
        return "reached_at is not a round"
    if not isinstance(meta["records"], list) or len(meta["records"]) != r:
        return f"records: expected a list of {r} round records"
    if not all(isinstance(rec, dict) for rec in meta["records"]):
        return "records: a round record is not an object"
    for key in ("scheduler", "time_model", "telemetry", "config"):
        if not isinstance(meta[key], dict):
            return f"{key} is a {type(meta[key]).__name__}, not an object"
    initial = meta.get("initial_eval")
    if initial is not None and (
        not isinstance(initial, dict)
        or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in initial.values())
        or not isinstance(initial.get("score"), (int, float))
    ):
        return "initial_eval is not an evaluation (an object of numbers with a score)"
    if meta.get("fingerprints") is not None and not isinstance(meta["fingerprints"], dict):
        return "fingerprints is not an object"
    accepted = meta.get("accepted_changes")
    if accepted is not None and not (isinstance(accepted, list) and all(isinstance(a, str) for a in accepted)):
        return "accepted_changes is not a list of strings"
    npy = meta["rng"].get("numpy") if isinstance(meta["rng"], dict) else None
    if (
        not isinstance(npy, dict)
        or npy.get("name") != "MT19937"
        or not isinstance(npy.get("keys"), list)
        or len(npy["keys"]) != 624
        or not all(isinstance(k, int) and 0 <= k < 2**32 for k in npy["keys"])
        or not all(isinstance(npy.get(k), (int, float)) for k in ("pos", "has_gauss", "cached_gaussian"))
    ):
        return "rng.numpy is not numpy's MT19937 state"
    return None


# ---- checks against the run that resumes
def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = MOVABLE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two config dicts (keys in `ignore`, and below them, left out)."""
    a, b = flatten(saved), flatten(current)

    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignore)

    return sorted(k for k in a.keys() | b.keys() if not ignored(k) and a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def list_keys(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(one_line(k, 120) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def with_defaults(saved: dict) -> dict:
    """`saved` (a checkpoint's config) with the keys a newer version added filled in with their defaults, so a
    run started before a key existed resumes when the key is left at its default. Unchanged when it no longer
    validates (the comparison then names what differs)."""
    import copy

    from fedranklite.config.files import validate

    saved = copy.deepcopy(saved)
    model = saved.get("model")
    if isinstance(model, dict) and "head" not in model:
        model["head"] = "linear"  # before model.head existed every model had a linear head (auto now differs)
    try:
        return validate(saved).to_dict()
    except Exception:
        return saved


def check_config(path: Path, saved: dict, current: dict, rounds_done: int | None = None) -> None:
    """Refuse a resume whose config differs from the checkpoint's, except `federation.num_rounds` alone when it
    is at least the `rounds_done` of the checkpoint: a run continues to more rounds (or stops at fewer, not yet
    reached) exactly as one started with that many, since the lr is constant and the loop reads num_rounds only
    to stop and to evaluate its last round (test_resume.py)."""
    diff = config_differences(with_defaults(saved), current)
    if diff == ["federation.num_rounds"] and rounds_done is not None:
        wanted = current["federation"]["num_rounds"]
        if wanted >= rounds_done:
            return
        raise ResumeError(
            f"{path}: the checkpoint has {rounds_done} rounds done and federation.num_rounds is {wanted}; "
            f"resume with federation.num_rounds >= {rounds_done}"
        )
    if diff:
        raise ResumeError(
            f"{path}: the checkpoint was written with a different configuration (differing: {list_keys(diff)}); "
            "resume with the same config and --set values"
        )


def check_adapter(path: Path, state: dict[str, torch.Tensor], model: dict[str, torch.Tensor]) -> None:
    """The checkpoint's global adapter has the model's keys, shapes and dtypes, and only finite values."""
    missing, extra = sorted(model.keys() - state.keys()), sorted(state.keys() - model.keys())
    if missing or extra:
        parts = ([f"missing {list_keys(missing, 3)}"] if missing else []) + (
            [f"unexpected {list_keys(extra, 3)}"] if extra else []
        )
        raise _refuse(path, f"its global adapter does not match the model's ({'; '.join(parts)})")
    for name in sorted(model):
        got, want = state[name], model[name]
        if tuple(got.shape) != tuple(want.shape):
            raise _refuse(
                path, f"global_state.{name} has shape {list(got.shape)}, the model's adapter {list(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise _refuse(path, f"global_state.{name} is {got.dtype}, the model's adapter {want.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _refuse(path, f"global_state.{name} holds NaN or infinite values")
