"""A rank profile on disk: what a LoRA rank costs on one device, as `fedranklite profile` measured it (profiling.py).

The JSON (schema_version 2) names the device it was measured on (`device`: kind cpu | cuda | mps, the CPU model
and torch threads or the GPU name), the setting it was measured for (its key: backbone, quantization, batch size,
sequence length, target modules, device kind) and the per-rank step times, bytes and memory with their linear
fits. This module reads and checks one (check_profile: required fields, finite positive times and bytes, a fit
that stays positive over the ranks used; anything else is refused in one line naming the file) and finds the
profile for a setting: the cache of this machine first, then the shipped ones in src/fedranklite/profiles/.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fedranklite.core.results_io import write_json_atomic

log = logging.getLogger(__name__)


SCHEMA_VERSION = 2  # 2: `schema_version` and `device` (1: neither, the device only inside provenance)


MAX_PROFILE_BYTES = 1 << 20  # a profile is a few KB; a larger file is refused before it is read


DEVICE_KINDS = ("cpu", "cuda", "mps")


SHIPPED_DIR = Path(__file__).parents[1] / "profiles"  # profiles measured by the project, shipped as package data


CACHE_ENV = "FEDRANKLITE_CACHE"


class ProfileError(ValueError):
    """A profile file that cannot be used (missing, unreadable, or for another setting)."""


@dataclass
class LinearFit:
    intercept: float
    slope: float
    r2: float

    def at(self, rank: float) -> float:
        return self.intercept + self.slope * rank


@dataclass
class RankProfile:
    """A measured rank sweep and its fits. `key` says what it was measured for (backbone, batch, length,
    target modules, device kind); `device` which device measured it; `provenance` how and when."""

    key: dict[str, Any]
    ranks: list[int]
    sec_per_step: list[float]  # median over repeats, batch of key["batch_size"]
    sec_per_step_iqr: list[float]
    peak_memory_mb: list[Optional[float]]
    bytes_per_rank: int  # one way, the rank-1 slice of every LoRA factor (fp32 as sent)
    bytes_fixed: int  # the head, sent every round both ways
    time_fit: LinearFit  # seconds per training sample = intercept + slope * rank
    memory_fit: Optional[LinearFit]  # MB = intercept + slope * rank
    noise_sec_per_sample: float  # median interquartile range of a step / batch size
    provenance: dict[str, Any] = field(default_factory=dict)
    # {"kind": cpu | cuda | mps, "name": CPU model or GPU name, "threads": torch CPU threads (cpu)}
    device: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    source: Optional[str] = field(default=None, compare=False)  # the file it was read from (not saved)

    @property
    def sec_per_sample(self) -> LinearFit:
        return self.time_fit

    @property
    def device_label(self) -> str:
        return device_label(self.device)

    def slope_within_noise(self) -> bool:
        """Is the whole change of per-sample time across the sweep within the measured noise?"""
        span = abs(self.time_fit.slope) * (max(self.ranks) - min(self.ranks))
        return span <= self.noise_sec_per_sample

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return {"schema_version": data.pop("schema_version"), "device": data.pop("device"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "profile") -> "RankProfile":
        """A profile from its JSON, checked by meaning (check_profile); ProfileError naming `source` if not."""
        check_profile(data, source)
        data = {k: v for k, v in data.items()}
        data["time_fit"] = LinearFit(**data["time_fit"])
        data["memory_fit"] = LinearFit(**data["memory_fit"]) if data.get("memory_fit") else None
        return cls(**data, source=source)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RankProfile":
        path = Path(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ProfileError(f"{path}: profile not found (make one with `fedranklite profile --config X`)") from None
        except OSError as exc:
            raise ProfileError(f"{path}: not a rank profile (cannot be read: {exc.strerror})") from None
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"{path}: not a rank profile ({size:,} bytes; a profile is at most {MAX_PROFILE_BYTES:,})"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProfileError(f"{path}: not a rank profile (not JSON: {type(exc).__name__})") from None
        return cls.from_json(data, str(path))

    def check_ranks(self, low: int, high: int) -> None:
        """The fit must predict a positive time per sample for every rank a run uses."""
        fit = self.time_fit
        worst = min(fit.at(low), fit.at(high))
        if not worst > 0:
            raise ProfileError(
                f"{self.source}: not a usable rank profile (its time fit {fit.intercept:.3g} + {fit.slope:.3g} r "
                f"predicts {worst:.3g} s per sample within ranks {low}..{high} of this run)"
            )


def device_label(device: dict[str, Any]) -> str:
    """A profile's device in words: the GPU's name, or the CPU model and its torch threads."""
    name = str(device.get("name") or "unknown device")
    if device.get("kind") == "cpu" and device.get("threads"):
        n = int(device["threads"])
        return f"{name} ({n} thread{'s' if n != 1 else ''})"
    return name


# ------------------------------------------------------------------ checks by meaning of a profile's JSON
_REQUIRED = (
    "schema_version",
    "device",
    "key",
    "ranks",
    "sec_per_step",
    "sec_per_step_iqr",
    "peak_memory_mb",
    "bytes_per_rank",
    "bytes_fixed",
    "time_fit",
    "memory_fit",
    "noise_sec_per_sample",
    "provenance",
)


_KEY_FIELDS = {"backbone": str, "quantization": str, "batch_size": int, "max_length": int, "target_modules": list}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_profile(data: Any, source: str) -> None:
    """Raise ProfileError (one line, naming `source`) unless `data` is a rank profile that prices time: the
    schema version this code reads, every field, finite positive step times and byte counts, a time fit that
    predicts positive seconds per sample over the sweep and agrees with the medians it was fitted to."""
    problem = _profile_problem(data)
    if problem:
        raise ProfileError(f"{source}: not a rank profile ({problem})")


def _profile_problem(data: Any) -> Optional[str]:  # noqa: C901 - one flat list of checks
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if "schema_version" not in data:
        return (
            "no schema_version: written before profiles named their device; measure it again with `fedranklite profile`"
        )
    version = data["schema_version"]
    if version != SCHEMA_VERSION or not _integer(version):
        return f"schema_version {version!r}; this version reads {SCHEMA_VERSION}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"missing field(s) {missing}"
    unknown = sorted(set(data) - set(_REQUIRED))
    if unknown:
        return f"unknown field(s) {unknown}"
    key, device = data["key"], data["device"]
    if not isinstance(key, dict):
        return "key: expected an object"
    for name, kind in _KEY_FIELDS.items():
        value = key.get(name)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
            return f"key.{name}: expected {'a positive integer' if kind is int else kind.__name__}, got {value!r}"
    if not key["target_modules"] or not all(isinstance(m, str) and m for m in key["target_modules"]):
        return "key.target_modules: expected a list of module names"
    if not isinstance(device, dict) or device.get("kind") not in DEVICE_KINDS:
        return f"device.kind: expected one of {list(DEVICE_KINDS)}"
    if not isinstance(device.get("name"), str) or not device["name"].strip() or len(device["name"]) > 200:
        return "device.name: expected the CPU model or GPU name"
    if device["kind"] == "cpu" and not (_integer(device.get("threads")) and device["threads"] >= 1):
        return "device.threads: expected the number of CPU threads (a positive integer)"
    if key.get("device") != device["kind"]:
        return f"key.device {key.get('device')!r} differs from device.kind {device['kind']!r}"
    ranks = data["ranks"]
    if not isinstance(ranks, list) or not ranks or len(ranks) > 1000:
        return "ranks: expected a list of 1 to 1000 ranks"
    if not all(_integer(r) and 1 <= r <= 65_536 for r in ranks) or sorted(set(ranks)) != ranks:
        return "ranks: expected increasing integers in 1..65536"
    for name, positive in (("sec_per_step", True), ("sec_per_step_iqr", False)):
        values = data[name]
        if not isinstance(values, list) or len(values) != len(ranks):
            return f"{name}: expected one number per rank ({len(ranks)})"
        if not all(_number(v) and (v > 0 if positive else v >= 0) for v in values):
            return f"{name}: expected finite {'positive' if positive else 'non-negative'} seconds"
    memory = data["peak_memory_mb"]
    if not isinstance(memory, list) or len(memory) != len(ranks):
        return f"peak_memory_mb: expected one value per rank ({len(ranks)})"
    if not all(m is None or (_number(m) and m > 0) for m in memory):
        return "peak_memory_mb: expected finite positive megabytes or null"
    if not (_integer(data["bytes_per_rank"]) and data["bytes_per_rank"] > 0):
        return f"bytes_per_rank: expected a positive integer, got {data['bytes_per_rank']!r}"
    if not (_integer(data["bytes_fixed"]) and data["bytes_fixed"] >= 0):
        return f"bytes_fixed: expected a non-negative integer, got {data['bytes_fixed']!r}"
    if not (_number(data["noise_sec_per_sample"]) and data["noise_sec_per_sample"] >= 0):
        return "noise_sec_per_sample: expected finite non-negative seconds"
    if not isinstance(data["provenance"], dict):
        return "provenance: expected an object"
    for name in ("time_fit", "memory_fit"):
        fit = data[name]
        if fit is None and name == "memory_fit":
            continue
        if not isinstance(fit, dict) or set(fit) != {"intercept", "slope", "r2"}:
            return f"{name}: expected intercept, slope and r2"
        if not all(_number(v) for v in fit.values()):
            return f"{name}: expected finite numbers, got {fit}"
    fit = LinearFit(**data["time_fit"])
    low, high = ranks[0], ranks[-1]
    if not (fit.at(low) > 0 and fit.at(high) > 0):
        return f"time_fit predicts {min(fit.at(low), fit.at(high)):.3g} s per sample within ranks {low}..{high}"
    # the fit is the least-squares line of these medians per sample (run_profile): a fit edited apart from
    # its sweep, or a sweep edited under its fit, would price time nobody measured
    per_sample = [step / key["batch_size"] for step in data["sec_per_step"]]
    refit, scale = fit_line(ranks, per_sample), max(per_sample)
    for r in (low, high):
        if abs(refit.at(r) - fit.at(r)) > 1e-6 * scale:
            return (
                f"time_fit predicts {fit.at(r):.4g} s per sample at rank {r}, the sweep's own fit {refit.at(r):.4g} "
                "(time_fit must be the line through sec_per_step / batch_size)"
            )
    return None


def fit_line(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return LinearFit(float(np.mean(y)) if y.size else 0.0, 0.0, 1.0)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0
    return LinearFit(float(intercept), float(slope), r2)


def device_kind(name: str) -> str:
    """The kind (cpu, cuda, mps) of a config's `device`; `auto` is cuda when torch sees a GPU."""
    import torch  # only here: reading a profile needs no torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def profile_key(cfg) -> dict[str, Any]:
    """What a profile depends on: the backbone, the batch shape, the adapted modules, the device kind."""
    return {
        "backbone": cfg.model.name,
        "quantization": cfg.model.quantization,
        "batch_size": cfg.training.batch_size,
        "max_length": cfg.model.max_length,
        "target_modules": sorted(cfg.model.lora.target_modules),
        "device": device_kind(cfg.device),
    }


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "fedranklite") / "profiles"


def key_file_name(key: dict[str, Any]) -> str:
    backbone = str(key["backbone"]).replace(":", "-").replace("/", "_")
    modules = "-".join(key["target_modules"])
    return f"{backbone}_{key['quantization']}_b{key['batch_size']}_l{key['max_length']}_{modules}_{key['device']}.json"


def find_profile(key: dict[str, Any]) -> Optional[Path]:
    """A profile measured for exactly `key`: the cache first (this machine), then the shipped ones."""
    name = key_file_name(key)
    for folder in (cache_dir(), SHIPPED_DIR):
        path = folder / name
        if path.is_file():
            return path
    return None
