"""Atomic per-round checkpoints, so a killed run continues with `--resume` exactly where it stopped.

A checkpoint holds everything that changes from round to round: the global adapter (LoRA factors and
head), the scheduler's state (EMAs, deadline misses), the time model's calibration, the RNG states,
the round records so far and the resolved config (a resume with a different config is refused).
Client optimizers are created fresh every round, so there is no optimizer state to keep.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class ResumeError(RuntimeError):
    """A run that cannot be resumed as asked."""


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ResumeError(f"no checkpoint at {path}: nothing to resume (run without --resume to start)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ResumeError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise ResumeError(f"{path}: checkpoint format {payload.get('format_version')} is not {FORMAT_VERSION}")
    return payload
