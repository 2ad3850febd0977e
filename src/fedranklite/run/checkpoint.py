"""Atomic per-round checkpoints, so a killed run continues with `--resume` exactly where it stopped.

A checkpoint holds everything that changes from round to round: the global adapter (LoRA factors and
head), the scheduler's state (EMAs, deadline misses), the time model's calibration, the RNG states,
the round records so far and the resolved config (a resume with a different config is refused).
Client optimizers are created fresh every round, so there is no optimizer state to keep.

The file (format 2) is read with `torch.load(weights_only=True)` only, so loading it can never run code:

    {"format_version": 2,
     "sha256": hex digest of everything below (see `digest`),
     "meta": one JSON string: round_idx, sim_time, reached_at, records, scheduler, time_model,
             telemetry, the numpy RNG state (a plain list) and the config,
     "global_state": {name: tensor},          the global adapter
     "rng_torch": uint8 tensor}               torch's CPU RNG state

The checksum catches a damaged or edited file (it is not a signature: whoever can write the file can
recompute it), so the contents are checked as well: every key present, the adapter's keys, shapes and
dtypes equal to the model's and finite (`check_adapter`). Every problem is one `ResumeError` line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fedranklite.config.files import flatten
from fedranklite.core.messages import one_line

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 2
META_KEYS = ("round_idx", "sim_time", "reached_at", "records", "scheduler", "time_model", "telemetry", "rng", "config")
# written when the run has them, absent from older checkpoints (read as None)
OPTIONAL_META_KEYS = ("initial_eval",)
# where a results folder lives, not what the run computes: a copied or renamed folder still resumes
MOVABLE_KEYS = ("output_dir", "experiment_name")
_V1_GLOBALS = {"numpy.ndarray", "numpy.dtype"}  # what format 1 (pickled numpy RNG state) needs beyond tensors


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


def digest(meta: str, global_state: dict[str, torch.Tensor], rng_torch: torch.Tensor) -> str:
    """SHA-256 over a canonical serialisation: the meta JSON, then every tensor (sorted by name) as name,
    dtype, shape and raw bytes, each length-prefixed so no two payloads share a byte stream."""
    h = hashlib.sha256()

    def put(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    put(f"fedranklite-checkpoint-{FORMAT_VERSION}".encode())
    put(meta.encode("utf-8"))
    for name, t in [*sorted(global_state.items()), ("<rng_torch>", rng_torch)]:
        put(name.encode("utf-8"))
        put(str(t.dtype).encode())
        put(json.dumps(list(t.shape)).encode())
        put(_tensor_bytes(t))
    return h.hexdigest()


def encode_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An engine payload (see Engine.checkpoint_payload) -> the dict that is written (format 2)."""
    rng = payload["rng"]
    meta = {k: payload[k] for k in META_KEYS if k != "rng"}
    meta.update({k: payload[k] for k in OPTIONAL_META_KEYS if payload.get(k) is not None})
    meta["rng"] = {"numpy": rng["numpy"]}
    text = json.dumps(meta, default=_plain, sort_keys=True, allow_nan=True)
    state = {str(k): v.detach().cpu().contiguous() for k, v in payload["global_state"].items()}
    rng_torch = rng["torch"].detach().cpu().contiguous()
    return {
        "format_version": FORMAT_VERSION,
        "sha256": digest(text, state, rng_torch),
        "meta": text,
        "global_state": state,
        "rng_torch": rng_torch,
    }


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over the old one."""
    write_raw(path, encode_payload(payload))


def write_raw(path: str | Path, obj: Any) -> None:
    """torch.save `obj` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...] = (CHECKPOINT_NAME,)) -> list[Path]:
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


def _looks_like_zip(path: Path) -> bool:
    """True for an empty file or one starting with a zip local-file header: a truncated or emptied checkpoint is
    damaged, not foreign."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True
    return head in (b"", b"PK\x03\x04")


def _unreadable(path: Path, exc: Exception) -> ResumeError:
    """Why torch.load refused the file, in one line; a format-1 checkpoint (pickled numpy RNG state) is named."""
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a torch zip file at all (truncated, random bytes, a bare pickle)
        unsafe = None
    if unsafe and {g.replace("numpy._core.", "numpy.").replace("numpy.core.", "numpy.") for g in unsafe} <= (
        _V1_GLOBALS | {"numpy.multiarray._reconstruct"}
    ):
        return _refuse(
            path,
            f"written by an older FedRankLite (checkpoint format 1, unsafe to load); the format changed to "
            f"{FORMAT_VERSION}",
        )
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
        return _refuse(path, f"not a FedRankLite checkpoint: it refers to Python objects ({shown}) and was not loaded")
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"Unsupported (?:global|operand)[^.\n]*", str(exc))
        detail = one_line(found.group(0), 80) if found else "not a torch checkpoint file"
        return _refuse(path, f"not a FedRankLite checkpoint; refused without unpickling it ({detail})")
    if not _looks_like_zip(path):
        # Random bytes make torch's restricted unpickler fail with whatever error the first opcode triggers
        # (IndexError, EOFError, ...); what matters to the user is that the file was never a torch archive.
        return _refuse(path, "not a FedRankLite checkpoint (not a torch zip archive); refused without unpickling it")
    return _refuse(path, f"unreadable checkpoint, damaged or not one ({type(exc).__name__}: {one_line(str(exc), 80)})")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file -> the engine payload (the inverse of `encode_payload`). Every problem is one
    ResumeError line; nothing in the file is executed (weights_only=True)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ResumeError(f"no checkpoint at {path}: nothing to resume (run without --resume to start)")
    if not path.is_file():
        raise _refuse(path, "not a file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(raw, dict):
        raise _refuse(path, f"not a FedRankLite checkpoint (a {type(raw).__name__}, not a dict)")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        if version == 1:
            raise _refuse(path, f"checkpoint format 1 (an older FedRankLite); the format changed to {FORMAT_VERSION}")
        raise _refuse(path, f"checkpoint format {one_line(repr(version), 40)} is not {FORMAT_VERSION}")
    for key, kind in (("sha256", str), ("meta", str), ("global_state", dict), ("rng_torch", torch.Tensor)):
        if key not in raw:
            raise _refuse(path, f"missing key '{key}'")
        if not isinstance(raw[key], kind):
            raise _refuse(path, f"'{key}' is a {type(raw[key]).__name__}, not a {kind.__name__}")
    state = raw["global_state"]
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise _refuse(path, f"global_state.{one_line(bad[0], 60)} is not a named tensor")
    rng_torch = raw["rng_torch"]
    if rng_torch.dtype != torch.uint8 or rng_torch.dim() != 1:
        raise _refuse(path, "rng_torch is not a uint8 vector (torch's RNG state)")
    if digest(raw["meta"], state, rng_torch) != raw["sha256"]:
        raise _refuse(path, "checksum mismatch (SHA-256): the file was damaged or changed after it was written")
    try:
        meta = json.loads(raw["meta"])
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
