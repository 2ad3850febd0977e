"""Command line: `fedranklite run --config X [--set a.b=v ...] [--quiet]`.

The modules that load models and data (and so import huggingface_hub, transformers, datasets) are
imported inside the commands, after `_offline_when_local` has set HF_HUB_OFFLINE/HF_DATASETS_OFFLINE:
those libraries read the variables once, at import.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from fedranklite.config.files import load_config
from fedranklite.config.schema import ConfigError


def _offline_defaults() -> None:
    # The quick start must work without a network: never wait on the hub unless the user asks for it.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _offline_when_local(cfg) -> None:
    """Nothing of this run lives on the Hub: tell the HF libraries so (set before they are imported),
    so a machine without network never waits on a connection attempt."""
    name = cfg.model.name
    if name.startswith(("bundled:", "tiny:")) or Path(name).expanduser().exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    local_glue = False
    if cfg.data.source == "glue":
        from fedranklite.data.glue import resolve_data_dir

        local_glue = resolve_data_dir(cfg.data.data_dir) is not None  # else the hub fallback needs the network
    if cfg.data.source in ("embedded", "files") or local_glue:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _format_score(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, quiet=False)
    try:
        cfg = load_config(args.config, args.set)
        if args.centralized:
            from fedranklite.run.centralized import centralized_config

            cfg = centralized_config(cfg)
        from fedranklite.run.preflight import check

        check(cfg, args.config)  # this machine's devices and the backbone's limits, before anything loads
    except ConfigError as exc:
        console.print(f"[bold red]config error[/]: {_config_error_text(exc)}", highlight=False, soft_wrap=True)
        return 2
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.outfolder import OutputFolderError

    # the results folder before anything loads: a checkpoint to resume from that fits this config, or a
    # folder without earlier results (unless --overwrite / --new-folder) that can be written
    try:
        cfg = _results_folder(cfg, args)
    except ResumeError as exc:
        console.print(f"[bold red]cannot resume[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    except OutputFolderError as exc:
        console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    _offline_when_local(cfg)
    from fedranklite.backends import start
    from fedranklite.backends.surrogate.engine import CalibrationError
    from fedranklite.data.textsplit import DataError
    from fedranklite.model.backbones import ModelError
    from fedranklite.run.profiling import ProfileError
    from fedranklite.run.viability import RunRefused, RunStopped

    log = logging.getLogger("fedranklite")
    total = cfg.federation.num_rounds
    began = time.perf_counter()
    try:
        with _setting_up(console, cfg, args.quiet):
            run = start(cfg)
            if args.resume and hasattr(run, "resume_from_checkpoint"):
                run.resume_from_checkpoint()  # the adapter against the model's, before the run's first line
    except ResumeError as exc:
        console.print(f"[bold red]cannot resume[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    except ImportError as exc:  # an optional dependency of the chosen backend (Flower)
        console.print(
            f"[bold red]error[/]: engine.backend={cfg.engine.backend} needs a package that is not "
            f'installed: {exc} (pip install -e ".[{cfg.engine.backend}]")',
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except (DataError, ModelError, CalibrationError, ProfileError, RunRefused) as exc:
        console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    console.print(
        f"[bold]{cfg.experiment_name}[/]: {describe_run(cfg)} (set up in {time.perf_counter() - began:.1f}s)",
        highlight=False,
        soft_wrap=args.quiet,  # a terminal line wraps at its width
    )
    metric = cfg.evaluation.metric or getattr(run, "metric", "score")

    def describe(rec) -> str:
        ranks = rec.clients.rank
        if cfg.metrics.client_records == "columns":  # thousands of clients per round: a distribution
            return (
                f"round {rec.round}/{total}  {metric}={_format_score(rec.score)}  sim={rec.sim_time:.1f}s  "
                f"clients={len(ranks)}  stragglers={len(rec.stragglers)}  "
                f"mean rank={float(ranks.mean()) if len(ranks) else 0.0:.2f}"
            )
        shown = " ".join(f"{c}:{r}" for c, r in rec.ranks.items())
        return (
            f"round {rec.round}/{total}  {metric}={_format_score(rec.score)}  sim={rec.sim_time:.1f}s  "
            f"stragglers={len(rec.stragglers)}  ranks[{shown}]"
        )

    try:
        if args.quiet:
            summary = run.run(on_round=lambda rec: log.info(describe(rec)), resume=args.resume)
        else:
            summary = _run_with_progress(run, args, console, RoundLines(metric, total, _higher_is_better(run)))
    except ResumeError as exc:
        console.print(f"[bold red]cannot resume[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    except (DataError, ModelError) as exc:  # raised inside a Flower run, where set-up happens per process
        console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    except RunStopped as exc:
        console.print(f"[bold red]{exc}[/]", highlight=False, soft_wrap=True)
        return 3
    except RuntimeError as exc:
        if cfg.engine.backend != "flower":
            raise
        console.print(f"[bold red]Flower run failed[/]: {exc}", highlight=False, soft_wrap=True)
        return 1
    print_summary(console, summary, cfg.results_dir)
    return 0


def _config_error_text(exc: Exception) -> str:
    """A config error with a single problem on one line ("invalid configuration: FILE: KEY: why")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) == 2 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return str(exc)


def _results_folder(cfg, args):
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


def describe_run(cfg) -> str:
    """One line saying what runs: backend, clients, plugins, deadline, model."""
    backend = cfg.engine.backend
    if backend == "flower":
        fl = cfg.engine.flower
        where = f"Flower {fl.mode}, {cfg.num_clients} clients on {fl.num_supernodes or cfg.num_clients} SuperNodes"
    else:
        where = f"{'surrogate, ' if backend == 'surrogate' else ''}{cfg.num_clients} clients"
    return (
        f"{where}, {cfg.federation.clients_per_round}/round, scheduler={cfg.federation.scheduler.type}, "
        f"aggregation={cfg.federation.aggregation.type}, policy={cfg.deadline.straggler_policy.type}, "
        f"deadline={cfg.deadline.seconds}, timing={cfg.timing.mode}, model={cfg.model.name}"
    )


def _higher_is_better(run) -> bool:
    return bool(getattr(run, "higher_is_better", True))


class RoundLines:
    """One line per round for the scrollback, in columns under a header, every line within 80 characters:
    round, score, best so far, the round's simulated and wall seconds, ranks min/median/max, stragglers."""

    def __init__(self, metric: str, total: int, higher_is_better: bool = True):
        self.metric, self.total, self.higher = str(metric)[:9], total, higher_is_better
        self.best: Optional[float] = None

    def header(self) -> str:
        return (
            f"{'round':>7} {self.metric:>9} {'best':>8} {'sim s':>8} {'wall s':>7} "
            f"{'ranks min/med/max':>17} {'stragglers':>10}"
        )

    def line(self, rec) -> str:
        import numpy as np

        if rec.score is not None and (
            self.best is None or (rec.score > self.best if self.higher else rec.score < self.best)
        ):
            self.best = rec.score
        ranks = np.asarray(rec.clients.rank)
        shown = f"{ranks.min()}/{int(np.median(ranks))}/{ranks.max()}" if len(ranks) else "-"
        late = f"{len(rec.stragglers)}/{len(rec.selected)}"
        return (
            f"{f'{rec.round}/{self.total}':>7} {_format_score(rec.score):>9} {_format_score(self.best):>8} "
            f"{rec.round_sim_seconds:>8.1f} {rec.wall_seconds:>7.1f} {shown:>17} {late:>10}"
        )


class _ClientProgress:
    """The local runner, told one client at a time (the same calls in the same order as LocalRunner.run),
    so the display can say which client of the round is training."""

    def __init__(self, inner, show):
        self.inner, self.show = inner, show

    def run(self, round_idx, global_state, tasks):
        results = []
        for k, task in enumerate(tasks):
            self.show(round_idx, k, len(tasks))
            results += self.inner.run(round_idx, global_state, [task])
        self.show(round_idx, len(tasks), len(tasks))
        return results


class _ConsoleLog(logging.Handler):
    """Log records printed through the rich console, so they land above a live progress bar."""

    def __init__(self, console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            style = "yellow" if record.levelno == logging.WARNING else "red" if record.levelno > logging.WARNING else ""
            self.console.print(f"{level}{record.getMessage()}", style=style, markup=False, highlight=False)
        except Exception:  # a log line must never stop the run
            self.handleError(record)


@contextlib.contextmanager
def _logs_through(console):
    """Route the root logger's stderr output through `console` within the block."""
    root = logging.getLogger()
    streams = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)
    ]
    handler = _ConsoleLog(console)
    for h in streams:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in streams:
            root.addHandler(h)


@contextlib.contextmanager
def _setting_up(console, cfg, quiet: bool):
    """A spinner that says which set-up step runs (loading the data, the model, tokenising)."""
    if quiet:
        yield
        return
    from fedranklite.run.prepare import STAGES, stage_listener

    with _logs_through(console), console.status("setting up the run", spinner="dots") as status:

        def show(step: str) -> None:
            what = STAGES.get(step, step)
            if step == "model_build":
                what = f"{what} {cfg.model.name}"
            status.update(f"setting up: {what}")

        with stage_listener(show):
            yield


def _run_with_progress(run, args, console, lines: RoundLines):
    """Each round's line printed above a live bar (rounds done, elapsed, ETA); during a round the bar says
    which client trains (local backend) and, in the set-up and tokenising steps, what happens."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    from fedranklite.run.prepare import STAGES, stage_listener
    from fedranklite.run.runners import LocalRunner

    total = lines.total
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", table_column=Column(width=30, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        speed_estimate_period=10**9,  # the ETA from every round so far, not only the last 30 s
    )
    with _logs_through(console), progress:
        task = progress.add_task("round 1: starting", total=total)
        console.print(lines.header(), highlight=False, style="bold")

        def show_client(round_idx: int, done: int, of: int) -> None:
            what = f"client {done + 1} of {of}" if done < of else "aggregate, evaluate"
            progress.update(
                task, completed=round_idx - 1 + (done / of if of else 0), description=f"round {round_idx}: {what}"
            )

        def show_step(step: str) -> None:
            if step.startswith("tokenise"):
                progress.update(task, description=STAGES[step].replace("the ", "").replace(" rows", ""))

        runner = getattr(run, "runner", None)
        if type(runner) is LocalRunner:  # per-client progress; other backends run a round as one batch
            run.runner = _ClientProgress(runner, show_client)

        def on_round(rec) -> None:
            console.print(lines.line(rec), highlight=False)
            nxt = f"round {rec.round + 1}: training" if rec.round < total else "done"
            progress.update(task, completed=rec.round, description=nxt)

        with stage_listener(show_step):
            return run.run(on_round=on_round, resume=args.resume)


def print_summary(console, summary, results_dir) -> None:
    """The headline numbers of a finished run (a RunSummary) as a table."""
    from rich.table import Table

    table = Table(title=f"{summary.run.get('experiment_name', results_dir)}  ({results_dir}/metrics.json)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ttt = summary.time_to_target
    fair = summary.fairness_final or {}
    baseline = summary.run.get("trivial_baseline")
    initial = summary.run.get("initial_eval")
    rows = [
        *([(f"{summary.metric} before training", _format_score(initial.get("score")))] if initial else []),
        (f"final {summary.metric}", _format_score(summary.final_score)),
        (f"best {summary.metric}", _format_score(summary.best_score)),
        *([(f"trivial baseline: {baseline['predictor']}", _format_score(baseline.get("score")))] if baseline else []),
        ("target", str(summary.target)),
        (
            "time to target (round / sim s)",
            "not reached" if ttt.round is None else f"{ttt.round} / {ttt.sim_seconds:.1f}",
        ),
        ("simulated time (s)", f"{summary.sim_time_total:.1f}"),
        ("wall time (s)", f"{summary.wall_time_total:.1f}"),
        (
            "deadline compliance",
            "-" if summary.deadline_compliance_pct is None else f"{summary.deadline_compliance_pct:.0f} %",
        ),
        ("stragglers (client-rounds)", str(summary.stragglers_total)),
        ("fairness p10/p50/p90 (client loss)", " / ".join(_format_score(v) for v in fair.values())),
        (
            "bytes up / down per client-round",
            f"{summary.bytes['up_per_client_per_round']:,.0f} / {summary.bytes['down_per_client_per_round']:,.0f}",
        ),
        (
            "peak memory, max over clients (MB)",
            f"{max(summary.peak_memory_mb.values()):.0f}" if summary.peak_memory_mb else "-",
        ),
        ("budget", (summary.run.get("budget") or {}).get("label", "-")),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for warning in summary.run.get("warnings") or []:
        console.print(f"[bold yellow]warning[/]: {warning}", highlight=False)  # wrapped at the terminal's width


def build_parser() -> argparse.ArgumentParser:
    from fedranklite import __version__

    parser = argparse.ArgumentParser(prog="fedranklite", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedranklite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment from a YAML config")
    run.add_argument("--config", "-c", required=True, help="experiment YAML (may inherit with _base_)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.num_rounds=3 (repeatable)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="log lines instead of a progress bar")
    start_as = run.add_mutually_exclusive_group()
    start_as.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from results/<experiment_name>/checkpoint.pt (same config)",
    )
    start_as.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if the results folder holds an earlier run's results (they are replaced)",
    )
    start_as.add_argument(
        "--new-folder",
        action="store_true",
        help="if the results folder holds an earlier run's results, write to <experiment_name>-2 (-3, ...) instead",
    )
    run.add_argument(
        "--centralized",
        action="store_true",
        help="the centralized reference of this config: one client with all the training data, "
        "same model, rank and sample budget (results under <experiment_name>_centralized)",
    )
    run.set_defaults(func=cmd_run)

    plot = sub.add_parser("plot", help="write PNG figures of a finished (or running) experiment")
    plot.add_argument("results", nargs="+", help="results folder(s), e.g. results/lite_iid")
    plot.add_argument("--out", help="folder for the PNGs (default: <results>/plots)")
    plot.set_defaults(func=cmd_plot)

    cal = sub.add_parser("calibrate", help="fit the what-if surrogate (engine.backend: surrogate) on a real run")
    cal.add_argument("results", help="results folder of a finished real run, e.g. results/lite_noniid_deadline")
    cal.add_argument("--out", help="where to write the fit (default: <results>/surrogate.json)")
    cal.set_defaults(func=cmd_calibrate)

    prof = sub.add_parser("profile", help="measure what a LoRA rank costs on this machine (time, memory, bytes)")
    prof.add_argument("--config", "-c", required=True, help="experiment YAML: its backbone, batch size, length")
    prof.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    prof.add_argument("--ranks", default="1,2,4,8,16,32", help="comma-separated ranks (r_max is always added)")
    prof.add_argument("--repeats", type=int, default=10, help="timed steps per rank (the median is used)")
    prof.add_argument("--warmup", type=int, default=3, help="untimed steps per rank first")
    prof.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; recorded in the profile)"
    )
    prof.add_argument(
        "--out",
        help="where to write the profile JSON (default: the cache that timing.mode: "
        "profile reads, ~/.cache/fedranklite/profiles/ or $FEDRANKLITE_CACHE)",
    )
    prof.set_defaults(func=cmd_profile)

    compare = sub.add_parser("compare", help="table of headline metrics of several runs")
    compare.add_argument("results", nargs="+", help="results folders")
    compare.add_argument("--plot", metavar="PNG", help="also plot every run's score vs simulated time here")
    compare.set_defaults(func=cmd_compare)

    sweep = sub.add_parser("sweep", help="run a grid (cells x axes x seeds) over one base config (spec: sweep.py)")
    sweep.add_argument("spec", help="sweep spec YAML: base, seeds, schedulers, optional set/axes/output_dir/reference")
    sweep.add_argument("--workers", type=int, help="parallel runs (local: default 1; slurm: array throttle %%N)")
    sweep.add_argument("--launcher", choices=("local", "slurm"), default="local")
    sweep.add_argument("--dry-run", action="store_true", help="print the runs (local) or the sbatch command (slurm)")
    sweep.add_argument("--seeds", type=int, help="seeds 0..N-1 instead of the spec's")
    sweep.add_argument(
        "--mark-only",
        action="store_true",
        help="mark runs finished (metrics.json complete, e.g. after Slurm); run nothing",
    )
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser("report", help="per-cell statistics and paired differences of a sweep (md, json, png)")
    report.add_argument("sweep_dir", help="the sweep's output_dir (holds sweep.json)")
    report.add_argument("--out", help="output folder (default: SWEEP_DIR/report)")
    report.add_argument("--reference", help="the cell to pair against (default: the spec's reference)")
    report.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    report.set_defaults(func=cmd_report)
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedranklite.study.sweep import main as sweep_main

    return sweep_main(args.spec, args.workers, args.launcher, args.dry_run, args.seeds, args.mark_only)


def cmd_report(args: argparse.Namespace) -> int:
    from fedranklite.study.report import main as report_main

    return report_main(args.sweep_dir, args.out, args.reference, args.resamples, args.seed)


def cmd_plot(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedranklite.study.plots import ResultsError, plot_run

    console = Console(stderr=True)
    for folder in args.results:
        try:
            paths = plot_run(folder, args.out)
        except ResultsError as exc:
            console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
            return 2
        except OSError as exc:
            return _cannot_write(console, "--out", exc)
        for path in paths:
            print(path)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from fedranklite.backends.surrogate.engine import FIT_FILE, CalibrationError, calibrate

    console = Console(stderr=True)
    try:
        fit = calibrate(args.results)
    except CalibrationError as exc:
        console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    try:
        path = fit.save(args.out or Path(args.results) / FIT_FILE)
    except OSError as exc:
        return _cannot_write(console, "--out", exc)
    src = fit.source
    console.print(
        f"fitted on {src['rounds']} rounds / {src['client_rounds']} client-rounds of {src['experiment']}:\n"
        f"  time   per sample = {fit.sec_per_sample:.4g} + {fit.sec_per_sample_per_rank:.4g} x rank s (R^2 "
        f"{src['time_r2']:.3f}, {src['time_mode']} timing)\n"
        f"  score  {fit.metric}: S_0 {fit.score_start:.4f} -> S* {fit.score_limit:.4f}, "
        f"k {fit.rate:.3f} of the gap per "
        f"full-rank round (trend RMSE {src['score_rmse']:.4f} over {src['evaluations']} evaluations)\n"
        f"  drops  phi {fit.drop_fraction:.4f}, beta {fit.rank_exponent:.3f}, noise sd {fit.noise_sigma:.3f} "
        f"({src['drop_points']} positive drops), client spread sd {fit.client_sigma:.3f}\n"
        f"  loss   client loss level = {fit.loss_intercept:.4f} + {fit.loss_slope:.4f} x score",
        highlight=False,
        soft_wrap=True,
    )
    print(path)
    return 0


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
        console.print(f"[bold red]config error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    except ValueError as exc:
        console.print(
            f"[bold red]error[/]: --ranks {args.ranks!r} / --repeats / --warmup / --threads: {exc}",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    _offline_when_local(cfg)
    import torch

    from fedranklite.model.backbones import ModelError
    from fedranklite.run.profiling import cache_dir, key_file_name, run_profile

    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(done: int, total: int, rank: int, seconds: float, memory) -> None:
        mem = "-" if memory is None else f"{memory:.0f} MB"
        console.print(f"rank {rank:>4}: {1e3 * seconds:8.1f} ms/step, peak {mem}   ({done}/{total})", highlight=False)

    try:
        profile = run_profile(cfg, ranks, warmup=args.warmup, repeats=args.repeats, progress=progress)
    except ModelError as exc:
        console.print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    out = Path(args.out) if args.out else cache_dir() / key_file_name(profile.key)
    profile.save(out)
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


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fedranklite.study.plots import ResultsError, compare_rows, config_differences, plot_compare

    console = Console(width=None if sys.stdout.isatty() else 200)  # files and pipes get the whole table
    try:
        header, rows = compare_rows(args.results)
    except ResultsError as exc:
        Console(stderr=True).print(f"[bold red]error[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    for line in config_differences(args.results):  # a scheduler comparison should change only the scheduler
        print(line, file=sys.stderr)
    table = Table(title="FedRankLite runs")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.plot:
        try:
            print(plot_compare(args.results, args.plot))
        except OSError as exc:
            return _cannot_write(Console(stderr=True), "--plot", exc)
    return 0


def _cannot_write(console, option: str, exc: OSError) -> int:
    """An output path that cannot be written: one line naming the option and the path."""
    from fedranklite.core.messages import one_line

    console.print(
        f"[bold red]error[/]: {option} {exc.filename or ''}: cannot be written ({one_line(exc.strerror or exc)})",
        highlight=False,
        soft_wrap=True,
    )
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    _offline_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "quiet", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the promise is one line, never a traceback: this is the net under every command
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    """One line for an error no command anticipated, with where it came from and how to see the rest."""
    import traceback

    from fedranklite.core.messages import one_line

    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "fedranklite" in f.filename] or frames
    where = f" (at {Path(ours[-1].filename).name}:{ours[-1].lineno})" if ours else ""
    if isinstance(exc, MemoryError):
        what = "out of memory"
    elif isinstance(exc, OSError) and exc.filename:
        what = f"{exc.filename}: {exc.strerror or exc}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    print(f"error: {one_line(what)}{where}; run with fedranklite --debug ... for the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
