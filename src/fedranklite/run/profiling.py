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
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from fedranklite.federation.ranks import num_bytes, truncate
from fedranklite.model.backbones import load_backbone
from fedranklite.model.device import pick_device
from fedranklite.model.fedmodel import FedModel, use_siamese
from fedranklite.run.rank_profile import (
    ProfileError,
    RankProfile,
    cache_dir,
    find_profile,
    fit_line,
    key_file_name,
    profile_key,
)

log = logging.getLogger(__name__)

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32)


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
