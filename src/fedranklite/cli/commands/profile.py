"""`fedranklite profile`: measure what a LoRA rank costs on this machine (time, memory, bytes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedranklite.cli.display import cannot_write, config_error_text, error
from fedranklite.cli.offline import offline_when_local
from fedranklite.config.files import load_config
from fedranklite.config.schema import ConfigError


def cmd_profile(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    try:
        cfg = load_config(args.config, args.set)
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
        if not ranks or min(ranks) < 1 or args.repeats < 1 or args.warmup < 0 or (args.threads or 1) < 1:
            raise ValueError("need ranks >= 1, --repeats >= 1, --warmup >= 0 and --threads >= 1")
    except ConfigError as exc:
        return error(console, config_error_text(exc), "config error")
    except ValueError as exc:
        return error(console, f"--ranks {args.ranks!r} / --repeats / --warmup / --threads: {exc}")
    offline_when_local(cfg)
    import torch

    from fedranklite.model.backbones import ModelError
    from fedranklite.run.profiling import run_profile
    from fedranklite.run.rank_profile import cache_dir, key_file_name

    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(done: int, total: int, rank: int, seconds: float, memory) -> None:
        mem = "-" if memory is None else f"{memory:.0f} MB"
        console.print(f"rank {rank:>4}: {1e3 * seconds:8.1f} ms/step, peak {mem}   ({done}/{total})", highlight=False)

    try:
        profile = run_profile(cfg, ranks, warmup=args.warmup, repeats=args.repeats, progress=progress)
    except ModelError as exc:
        return error(console, exc)
    out = Path(args.out) if args.out else cache_dir() / key_file_name(profile.key)
    try:
        profile.save(out)
    except OSError as exc:
        return cannot_write(console, "--out", exc)
    t, m = profile.time_fit, profile.memory_fit
    table = Table(
        title=f"rank profile of {cfg.model.name} (batch {cfg.training.batch_size} x "
        f"{cfg.model.max_length} tokens, {profile.provenance.get('gpu') or profile.provenance['cpu']})"
    )
    table.add_column("quantity")
    table.add_column("fit", justify="right")
    table.add_row("seconds per sample t(r)", f"{t.intercept:.4g} + {t.slope:.3g} x r  (R^2 {t.r2:.2f})")
    table.add_row(
        "compute per rank", f"{100 * t.slope / t.intercept:+.3f} % of rank 0 per rank" if t.intercept > 0 else "-"
    )
    table.add_row(
        "noise (median IQR per sample)",
        f"{profile.noise_sec_per_sample:.3g} s; the fitted change "
        f"over the sweep is {'within' if profile.slope_within_noise() else 'beyond'} it",
    )
    table.add_row("peak memory m(r)", "-" if m is None else f"{m.intercept:.0f} + {m.slope:.2f} x r MB")
    table.add_row("bytes per rank (one way)", f"{profile.bytes_per_rank:,}")
    table.add_row("head bytes (one way)", f"{profile.bytes_fixed:,}")
    console.print(table)
    print(out)
    return 0
