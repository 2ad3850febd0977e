"""What a LoRA rank costs on this machine: a measured rank sweep of a backbone (`fedranklite profile`).

For each rank r of the sweep a genuine rank-r LoRA is built on a fresh copy of the backbone (not a
masked r_max adapter, whose compute would be that of r_max whatever r), and one training step
(forward, backward, optimizer step) on a batch of the config's size and sequence length is timed:
warm-up steps first, then the median of the repeats. Peak memory is the CUDA allocator's peak on a GPU,
the process's peak resident set (VmHWM, reset before each rank) on Linux CPUs. Bytes per rank are exact:
the size of the rank-r slice of the LoRA factors as sent. Fits: seconds per sample t(r) = a + b·r,
memory m(r) = m0 + m1·r, with R² and the measured noise (the median of the per-rank interquartile
ranges of step time), so a reader sees whether b is distinguishable from noise.

The result is a small JSON profile with its provenance (CPU/GPU model, threads, library versions, date),
read by `timing.mode: profile` (timing.py) to price client compute deterministically.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import logging
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
from fedranklite.federation.timing import ProfileParams, TimeModel
from fedranklite.model.backbones import load_backbone
from fedranklite.model.device import pick_device
from fedranklite.model.fedmodel import FedModel, use_siamese

log = logging.getLogger(__name__)

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32)
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
    target modules); `provenance` where and when."""

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

    @property
    def sec_per_sample(self) -> LinearFit:
        return self.time_fit

    def slope_within_noise(self) -> bool:
        """Is the whole change of per-sample time across the sweep within the measured noise?"""
        span = abs(self.time_fit.slope) * (max(self.ranks) - min(self.ranks))
        return span <= self.noise_sec_per_sample

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RankProfile":
        data = dict(data)
        data["time_fit"] = LinearFit(**data["time_fit"])
        data["memory_fit"] = LinearFit(**data["memory_fit"]) if data.get("memory_fit") else None
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RankProfile":
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ProfileError(f"{path}: profile not found (make one with `fedranklite profile --config X`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ProfileError(f"{path}: not a rank profile ({type(exc).__name__}: {exc})") from None


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
    shipped profile for this setting, else a short sweep measured now and cached (announced in one line)."""
    if getattr(cfg.timing, "profile", None):  # only timing.mode: profile names a file
        return RankProfile.load(cfg.timing.profile)
    key = profile_key(cfg)
    found = find_profile(key)
    if found is not None:
        return RankProfile.load(found)
    target = cache_dir() / key_file_name(key)
    (announce or log.warning)(
        f"no rank profile for {key['backbone']} (batch {key['batch_size']} x {key['max_length']} tokens, "
        f"{key['device']}): measuring one now, cached in {target}"
    )
    profile = run_profile(cfg, warmup=2, repeats=5)
    profile.save(target)
    return profile


class ProfileTime:
    """timing.mode: profile: the analytic formula with a and b from a measured rank profile."""

    @classmethod
    def from_config(cls, params: ProfileParams, cfg=None) -> TimeModel:
        if cfg is None:
            raise ValueError("timing.mode: profile needs the run's config to find its profile")
        fit = ensure_profile(cfg).time_fit
        # a fitted slope below zero is measurement noise (a larger adapter is never cheaper): priced as zero
        return TimeModel("profile", max(fit.intercept, 0.0), max(fit.slope, 0.0))
