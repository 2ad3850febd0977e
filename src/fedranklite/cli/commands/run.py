"""`fedranklite run`: one experiment from a config, shown live (or as log lines with --quiet)."""

from __future__ import annotations

import argparse
import inspect
import logging
import time
from typing import Any, Optional

from fedranklite.cli.display import (
    RoundLines,
    config_error_text,
    describe_run,
    error,
    higher_is_better,
    print_summary,
    round_log_line,
    run_with_progress,
    setting_up,
)
from fedranklite.cli.offline import offline_when_local
from fedranklite.config.files import load_config
from fedranklite.config.schema import ConfigError


def load_run_config(args: argparse.Namespace, console) -> Optional[Any]:
    """The validated config of `run` (--config, --set, --centralized) checked against this machine and the
    backbone's limits, or None after printing the one-line config error."""
    try:
        cfg = load_config(args.config, args.set)
        if args.centralized:
            from fedranklite.run.centralized import centralized_config

            cfg = centralized_config(cfg)
        from fedranklite.run.preflight import check

        check(cfg, args.config)  # this machine's devices and the backbone's limits, before anything loads
    except ConfigError as exc:
        error(console, config_error_text(exc), "config error")
        return None
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, quiet=False)
    if args.allow_changed and not args.resume:
        return error(console, "--allow-changed only applies with --resume (a resumed run's config check)")
    cfg = load_run_config(args, console)
    if cfg is None:
        return 2
    if args.dry_run:
        from fedranklite.cli.commands.dry_run import dry_run

        return dry_run(cfg, args, console)
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.outfolder import OutputFolderError

    # the results folder before anything loads: a checkpoint to resume from that fits this config, or a
    # folder without earlier results (unless --overwrite / --new-folder) that can be written
    try:
        cfg = results_folder(cfg, args)
    except ResumeError as exc:
        return error(console, exc, "cannot resume")
    except OutputFolderError as exc:
        return error(console, exc)
    offline_when_local(cfg)
    return _run(cfg, args, console)


def _run(cfg, args: argparse.Namespace, console) -> int:
    from fedranklite.backends import start
    from fedranklite.backends.surrogate.engine import CalibrationError
    from fedranklite.data.textsplit import DataError
    from fedranklite.model.backbones import ModelError
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.outfolder import OutputFolderError
    from fedranklite.run.pricing import pricing, pricing_lines
    from fedranklite.run.rank_profile import ProfileError
    from fedranklite.run.viability import RunRefused, RunStopped

    log = logging.getLogger("fedranklite")
    total = cfg.federation.num_rounds
    began = time.perf_counter()
    options = resume_options(args)
    try:
        with setting_up(console, cfg, args.quiet):
            run = start(cfg)
            if options and "allow_changed" not in inspect.signature(run.run).parameters:
                return error(
                    console, f"--allow-changed: engine.backend {cfg.engine.backend} cannot resume on changed inputs"
                )
            if args.resume and hasattr(run, "resume_from_checkpoint"):
                run.resume_from_checkpoint(**options)  # the adapter against the model's, before the run's first line
    except ResumeError as exc:
        return error(console, exc, "cannot resume")
    except OutputFolderError as exc:  # another process writes to the results folder
        return error(console, exc)
    except ImportError as exc:  # an optional dependency of the chosen backend (Flower)
        return error(
            console,
            f"engine.backend={cfg.engine.backend} needs a package that is not installed: {exc} "
            f'(pip install -e ".[{cfg.engine.backend}]")',
        )
    except (DataError, ModelError, CalibrationError, ProfileError, RunRefused) as exc:
        return error(console, exc)
    console.print(
        f"[bold]{cfg.experiment_name}[/]: {describe_run(cfg)} (set up in {time.perf_counter() - began:.1f}s)",
        highlight=False,
        soft_wrap=args.quiet,  # a terminal line wraps at its width
    )
    # where simulated compute prices come from, per tier (the device a tier names, and the profile's device)
    for line in pricing_lines(pricing(cfg)):
        console.print(f"  {line}", highlight=False, soft_wrap=args.quiet)
    metric = cfg.evaluation.metric or getattr(run, "metric", "score")
    try:
        if args.quiet:
            summary = run.run(
                on_round=lambda rec: log.info(round_log_line(rec, cfg, metric, total)), resume=args.resume, **options
            )
        else:
            lines = RoundLines(metric, total, higher_is_better(run))
            summary = run_with_progress(run, args, console, lines, **options)
    except ResumeError as exc:
        return error(console, exc, "cannot resume")
    except OutputFolderError as exc:
        return error(console, exc)
    except (DataError, ModelError) as exc:  # raised inside a Flower run, where set-up happens per process
        return error(console, exc)
    except RunStopped as exc:
        console.print(f"[bold red]{exc}[/]", highlight=False, soft_wrap=True)
        return 3
    except RuntimeError as exc:
        if cfg.engine.backend != "flower":
            raise
        error(console, exc, "Flower run failed")
        return 1
    print_summary(console, summary, cfg.results_dir)
    return 0


def resume_options(args: argparse.Namespace) -> dict[str, Any]:
    """What a resume passes to the run's `resume_from_checkpoint` and `run`: `allow_changed`, the recorded
    inputs (run/fingerprint.py: data, backbone, ...) whose change since the checkpoint --allow-changed accepts.
    The one place the option reaches the resume path."""
    return {"allow_changed": list(args.allow_changed)} if args.allow_changed else {}


def results_folder(cfg, args: argparse.Namespace):
    """The results folder checked before the model and data load (outfolder.py); with --resume, the
    checkpoint is read and compared with the config here too, so a refused resume loads nothing."""
    from fedranklite.run.checkpoint import CHECKPOINT_NAME, check_config, load_checkpoint
    from fedranklite.run.outfolder import prepare_results_folder

    if args.resume:
        path = cfg.results_dir / CHECKPOINT_NAME
        saved = load_checkpoint(path)
        check_config(path, saved["config"], cfg.to_dict(), saved.get("round_idx"))
    new = prepare_results_folder(cfg, resume=args.resume, overwrite=args.overwrite, new_folder=args.new_folder)
    if new.experiment_name != cfg.experiment_name:
        logging.getLogger("fedranklite").warning(
            "%s already holds results: this run writes to %s (--new-folder)", cfg.results_dir, new.results_dir
        )
    return new
