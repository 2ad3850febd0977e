"""The terminal display of a run: the spinner while it sets up, one line per round above a live progress
bar, the summary table at the end, and error lines. Rich is imported inside the functions, so importing the
command line stays cheap."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Optional


def format_score(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def error(console, message: object, label: str = "error") -> int:
    """One red-labelled line on `console` (wrapped only by the terminal); returns exit code 2."""
    console.print(f"[bold red]{label}[/]: {message}", highlight=False, soft_wrap=True)
    return 2


def config_error_text(exc: Exception) -> str:
    """A config error with a single problem on one line ("invalid configuration: FILE: KEY: why")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) == 2 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return str(exc)


def cannot_write(console, option: str, exc: OSError) -> int:
    """An output path that cannot be written: one line naming the option and the path."""
    from fedranklite.core.messages import one_line

    return error(console, f"{option} {exc.filename or ''}: cannot be written ({one_line(exc.strerror or exc)})")


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


def higher_is_better(run) -> bool:
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
            f"{f'{rec.round}/{self.total}':>7} {format_score(rec.score):>9} {format_score(self.best):>8} "
            f"{rec.round_sim_seconds:>8.1f} {rec.wall_seconds:>7.1f} {shown:>17} {late:>10}"
        )


class ClientProgress:
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


class ConsoleLog(logging.Handler):
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
def logs_through(console):
    """Route the root logger's stderr output through `console` within the block."""
    root = logging.getLogger()
    streams = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)
    ]
    handler = ConsoleLog(console)
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
def setting_up(console, cfg, quiet: bool):
    """A spinner that says which set-up step runs (loading the data, the model, tokenising)."""
    if quiet:
        yield
        return
    from fedranklite.run.prepare import STAGES, stage_listener

    with logs_through(console), console.status("setting up the run", spinner="dots") as status:

        def show(step: str) -> None:
            what = STAGES.get(step, step)
            if step == "model_build":
                what = f"{what} {cfg.model.name}"
            status.update(f"setting up: {what}")

        with stage_listener(show):
            yield


def run_with_progress(run, args, console, lines: RoundLines, **run_options):
    """Each round's line printed above a live bar (rounds done, elapsed, ETA); during a round the bar says
    which client trains (local backend) and, in the set-up and tokenising steps, what happens. `run_options`
    go to `run.run` as they are."""
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
    with logs_through(console), progress:
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
            run.runner = ClientProgress(runner, show_client)

        def on_round(rec) -> None:
            console.print(lines.line(rec), highlight=False)
            nxt = f"round {rec.round + 1}: training" if rec.round < total else "done"
            progress.update(task, completed=rec.round, description=nxt)

        with stage_listener(show_step):
            return run.run(on_round=on_round, resume=args.resume, **run_options)


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
        *([(f"{summary.metric} before training", format_score(initial.get("score")))] if initial else []),
        (f"final {summary.metric}", format_score(summary.final_score)),
        (f"best {summary.metric}", format_score(summary.best_score)),
        *([(f"trivial baseline: {baseline['predictor']}", format_score(baseline.get("score")))] if baseline else []),
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
        ("fairness p10/p50/p90 (client loss)", " / ".join(format_score(v) for v in fair.values())),
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


def round_log_line(rec, cfg, metric: str, total: int) -> str:
    """A finished round as one log line (`run --quiet`)."""
    ranks = rec.clients.rank
    if cfg.metrics.client_records == "columns":  # thousands of clients per round: a distribution
        return (
            f"round {rec.round}/{total}  {metric}={format_score(rec.score)}  sim={rec.sim_time:.1f}s  "
            f"clients={len(ranks)}  stragglers={len(rec.stragglers)}  "
            f"mean rank={float(ranks.mean()) if len(ranks) else 0.0:.2f}"
        )
    shown = " ".join(f"{c}:{r}" for c, r in rec.ranks.items())
    return (
        f"round {rec.round}/{total}  {metric}={format_score(rec.score)}  sim={rec.sim_time:.1f}s  "
        f"stragglers={len(rec.stragglers)}  ranks[{shown}]"
    )
