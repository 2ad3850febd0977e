"""What a LoRA rank costs on this machine: a measured rank sweep of a backbone (`fedranklite profile`).

For each rank r of the sweep a genuine rank-r LoRA is built on a fresh copy of the backbone (not a
masked r_max adapter, whose compute would be that of r_max whatever r), and one training step
(forward, backward, optimizer step) on a batch of the config's size and sequence length is timed:
warm-up steps first, then the median of the repeats. Peak memory is the CUDA allocator's peak on a GPU,
the process's peak resident set (VmHWM, reset before each rank) on Linux CPUs. Bytes per rank are exact:
the size of the rank-r slice of the LoRA factors as sent. Fits: seconds per sample t(r) = a + b·r,
memory m(r) = m0 + m1·r, with R² and the measured noise (the median of the per-rank interquartile
ranges of step time), so a reader sees whether b is distinguishable from noise.

The result is a small JSON profile (schema_version 2) that names the device it was measured on (`device`:
kind cpu | cuda | mps, the CPU model and torch threads or the GPU name) with its provenance (library versions,
date, load), read by `timing.mode: profile` (timing.py) to price client compute deterministically. Measured
with `fedranklite profile --config X --out FILE` on any machine, it can be dropped in as `timing.profile`, or
shipped in src/fedranklite/profiles/ under its key's file name (key_file_name) where it is found by key and
serves as a measured device conversion (run/pricing.py). A profile is checked by meaning when it loads
(check_profile): anything else is refused in one line naming the file.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from fedranklite.core.results_io import write_json_atomic
from fedranklite.federation.ranks import num_bytes, truncate
from fedranklite.model.backbones import load_backbone
from fedranklite.model.device import pick_device
from fedranklite.model.fedmodel import FedModel, use_siamese

log = logging.getLogger(__name__)

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32)
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


def profile_key(cfg) -> dict[str, Any]:
    """What a profile depends on: the backbone, the batch shape, the adapted modules, the device kind."""
    return {
        "backbone": cfg.model.name,
        "quantization": cfg.model.quantization,
        "batch_size": cfg.training.batch_size,
        "max_length": cfg.model.max_length,
        "target_modules": sorted(cfg.model.lora.target_modules),
        "device": _device_kind(cfg.device),
    }


def _device_kind(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def provenance(device: torch.device) -> dict[str, Any]:
    import transformers

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "machine": platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_record(device: torch.device) -> dict[str, Any]:
    """The profile's `device`: what measured it, as pricing compares devices (run/pricing.py). On a GPU the
    GPU's name as CUDA reports it (e.g. "NVIDIA H100 80GB HBM3"); on a CPU its model name and the torch
    threads the sweep ran with (a CPU's speed depends on both)."""
    if device.type == "cuda":
        return {"kind": "cuda", "name": torch.cuda.get_device_name(device)}
    if device.type == "mps":
        return {"kind": "mps", "name": f"Apple {platform.machine()} GPU (MPS)"}
    return {"kind": "cpu", "name": _cpu_model(), "threads": int(torch.get_num_threads())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class _PeakRSS:
    """Peak resident set of this process since the last reset (Linux: VmHWM, reset via clear_refs)."""

    def reset(self) -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def megabytes(self) -> Optional[float]:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return None


def _time_rank(
    cfg, rank: int, num_labels: int, device: torch.device, warmup: int, repeats: int, peak: _PeakRSS
) -> tuple[list[float], Optional[float], int, int]:
    """Step times of a genuine rank-`rank` LoRA, its peak memory, bytes of one rank slice and of the head.
    Not fedmodel.build_model: the sweep needs the adapter `rank` wide and one text per row (a siamese model
    built for a pair config would need the second text), whatever the config's r_max and text columns."""
    # the model of the rank measured before is a reference cycle (hooks, the adapter library's modules): free it
    # now, or its weights count in this rank's peak memory
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    backbone = load_backbone(
        cfg.model.name, cfg.model.pooling, cfg.model.quantization, cfg.seed, getattr(cfg.model, "cache_dir", None)
    )
    lora = cfg.model.lora
    torch.manual_seed(cfg.seed)
    model = FedModel(
        backbone,
        num_labels,
        rank,
        lora.alpha,
        lora.dropout,
        list(lora.target_modules),
        cfg.model.head_dropout,
        quantized=cfg.model.quantization != "none",
        siamese=use_siamese(cfg.model.pair_encoding, backbone, 1),
    )
    model.to(device)
    model.train()
    state = model.adapter_state()
    lora_state = {k: v for k, v in state.items() if "lora_" in k}
    per_rank = num_bytes(truncate(lora_state, 1))
    head = num_bytes({k: v for k, v in state.items() if "lora_" not in k})
    b, length = cfg.training.batch_size, cfg.model.max_length
    generator = torch.Generator().manual_seed(cfg.seed)
    vocab = int(getattr(model.tokenizer, "vocab_size", 1000) or 1000)
    ids = torch.randint(5, max(vocab, 6), (b, length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, num_labels, (b,), generator=generator).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(warmup):
        _train_step(model, optimizer, ids, mask, labels, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    measured_rss = peak.reset()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _train_step(model, optimizer, ids, mask, labels, device)
        times.append(time.perf_counter() - start)
    memory = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else (peak.megabytes() if measured_rss else None)
    )
    return times, memory, per_rank, head


def _train_step(model: FedModel, optimizer, ids, mask, labels, device: torch.device) -> None:
    """forward, backward, optimizer step (what a client does per batch)."""
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_profile(
    cfg,
    ranks: Sequence[int] = DEFAULT_RANKS,
    warmup: int = 3,
    repeats: int = 10,
    num_labels: int = 2,
    passes: int = 3,
    progress=None,
) -> RankProfile:
    """Measure the rank sweep `ranks` (plus the config's r_max) for the config's backbone and batch shape.

    The sweep runs `passes` times, alternating forward and backward order, each pass timing
    ceil(repeats / passes) steps per rank after `warmup` untimed ones: a change of machine load during the
    sweep then spreads over every rank instead of landing on the ranks measured last."""
    device = pick_device(cfg.device)
    sweep = sorted({int(r) for r in ranks} | {int(cfg.model.lora.r_max)})
    passes = max(1, min(int(passes), int(repeats)))
    per_pass = -(-int(repeats) // passes)
    peak = _PeakRSS()
    times: dict[int, list[float]] = {r: [] for r in sweep}
    memory: dict[int, Optional[float]] = {r: None for r in sweep}
    per_rank = head = 0
    done = 0
    load_before = _load()
    for p in range(passes):
        for rank in sweep if p % 2 == 0 else sweep[::-1]:
            got, mem, per_rank, head = _time_rank(cfg, rank, num_labels, device, warmup, per_pass, peak)
            times[rank] += got
            if mem is not None:
                memory[rank] = mem if memory[rank] is None else max(memory[rank], mem)
            done += 1
            if progress is not None:
                progress(done, passes * len(sweep), rank, float(statistics.median(times[rank])), memory[rank])
    load = [load_before, _load()]
    cpus = os.cpu_count() or 1
    if device.type == "cpu" and any(x is not None and x > cpus for x in load):
        # other processes held the cores: every step time (and so every simulated second) is inflated
        log.warning(
            "this rank profile was measured on a busy machine (load average %s on %d CPUs): its step times may "
            "be inflated; re-measure on an idle machine (fedranklite profile --config ... --out FILE)",
            "/".join("-" if x is None else f"{x:.1f}" for x in load),
            cpus,
        )
    medians = [float(statistics.median(times[r])) for r in sweep]
    iqrs = [float(np.subtract(*np.percentile(times[r], [75, 25]))) for r in sweep]
    batch = cfg.training.batch_size
    time_fit = fit_line(sweep, [m / batch for m in medians])
    known = [(r, memory[r]) for r in sweep if memory[r] is not None]
    memory_fit = fit_line([r for r, _ in known], [m for _, m in known]) if len(known) >= 2 else None
    return RankProfile(
        key=profile_key(cfg),
        ranks=sweep,
        sec_per_step=medians,
        sec_per_step_iqr=iqrs,
        peak_memory_mb=[memory[r] for r in sweep],
        bytes_per_rank=per_rank,
        bytes_fixed=head,
        time_fit=time_fit,
        memory_fit=memory_fit,
        noise_sec_per_sample=float(np.median(iqrs)) / batch,
        provenance={
            **provenance(device),
            "warmup": warmup,
            "repeats": repeats,
            "passes": passes,
            "load_average": load,  # 1-minute load before and after the sweep (None where not readable)
        },
        device=device_record(device),
    )


def _load() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


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


def ensure_profile(cfg, announce: Optional[Callable[[str], None]] = None) -> RankProfile:
    """The profile `timing.mode: profile` uses: `timing.profile` if the config names one, else the cached or
    shipped profile for this setting, else a short sweep measured now and cached (announced in one line).
    A cached profile this version refuses (an older format, a damaged file) is measured again; a named or
    shipped one that is refused stops the run (ProfileError naming the file)."""
    if getattr(cfg.timing, "profile", None):  # only timing.mode: profile names a file
        return RankProfile.load(cfg.timing.profile)
    key = profile_key(cfg)
    found = find_profile(key)
    target = cache_dir() / key_file_name(key)
    if found is not None:
        try:
            return RankProfile.load(found)
        except ProfileError as exc:
            if found != target:
                raise
            (announce or log.warning)(f"{exc}: measuring it again")
    else:
        (announce or log.warning)(
            f"no rank profile for {key['backbone']} (batch {key['batch_size']} x {key['max_length']} tokens, "
            f"{key['device']}): measuring one now, cached in {target}"
        )
    profile = run_profile(cfg, warmup=2, repeats=5)
    profile.save(target)
    profile.source = str(target)
    return profile
