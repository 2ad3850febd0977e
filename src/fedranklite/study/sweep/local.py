"""The local launcher: a sweep's unfinished runs as `fedranklite run` processes on this machine, `workers` at a
time, seed by seed, each with its output in <run folder>/sweep_run.log. A run that fails leaves
sweep_error.log (its command and the log's tail) and the sweep goes on; Ctrl-C (or SIGTERM) stops every
child, and the same command later resumes them."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from fedranklite.study.sweep import state
from fedranklite.study.sweep.spec import Plan, Run
from fedranklite.study.sweep.state import CHILD_ENV, ERROR_FILE, LOG_FILE, final_score, mark_done


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the child's process group (it may be gone already)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop(procs: dict) -> None:
    """SIGTERM every child's process group, then SIGKILL what is left after 10 s."""
    for proc, *_ in procs.values():
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc, *_ in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _kill(procs: dict) -> None:
    """SIGKILL every child's process group and reap it."""
    for proc, *_ in procs.values():
        _signal_group(proc, signal.SIGKILL)
    for proc, *_ in procs.values():
        proc.wait()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_local(plan: Plan, states: dict[str, str], workers: int) -> int:
    total = len(plan.runs)
    # seed by seed (every cell of seed 0 first): a sweep stopped half-way leaves complete, paired seeds
    todo = deque(sorted((r for r in plan.runs if states[r.folder] != "done"), key=lambda r: r.seed))
    finished = total - len(todo)
    print(
        f"sweep {plan.output_dir}: {total} runs, {finished} already finished, "
        f"{sum(states[r.folder] == 'resume' for r in todo)} to resume; {min(workers, len(todo) or 1)} workers",
        flush=True,
    )
    env = {**os.environ, **CHILD_ENV}
    procs: dict[str, tuple] = {}
    failures: list[tuple[Run, int]] = []
    began = time.monotonic()
    ended_here = 0
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        while todo or procs:
            while todo and len(procs) < workers:
                run = todo.popleft()
                folder = plan.output_dir / run.folder
                folder.mkdir(parents=True, exist_ok=True)
                resume = states[run.folder] == "resume"
                log = open(folder / LOG_FILE, "a")  # a resumed run keeps its earlier output
                log.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} sweep: {'resume' if resume else 'start'}\n")
                log.flush()
                proc = subprocess.Popen(
                    state.command(plan, run, resume),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches the sweep, which stops the children itself
                )
                procs[run.folder] = (proc, run, resume, log, time.monotonic())
            time.sleep(0.2)
            for key in [k for k, (p, *_) in procs.items() if p.poll() is not None]:
                proc, run, resume, log, started = procs.pop(key)
                log.close()
                wall = time.monotonic() - started
                folder = plan.output_dir / run.folder
                finished += 1
                ended_here += 1
                eta = (time.monotonic() - began) / ended_here * (len(todo) + len(procs))
                if proc.returncode == 0:
                    score = final_score(folder)
                    mark_done(folder, {"wall_seconds": round(wall, 2), "resumed": resume, "final_score": score})
                    (folder / ERROR_FILE).unlink(missing_ok=True)
                    outcome = f"final {'-' if score is None else f'{score:.4f}'}"
                else:
                    failures.append((run, proc.returncode))
                    cmd = shlex.join(state.command(plan, run, resume))
                    (folder / ERROR_FILE).write_text(f"exit {proc.returncode}: {cmd}\n{tail(folder / LOG_FILE)}\n")
                    outcome = f"FAILED (exit {proc.returncode}, see {folder / ERROR_FILE})"
                print(
                    f"[{finished}/{total}] {run.group} seed {run.seed}{' (resumed)' if resume else ''}: {outcome}  "
                    f"wall {wall:.1f}s  ETA {duration(eta) if todo or procs else '-'}",
                    flush=True,
                )
    except KeyboardInterrupt:
        try:
            _stop(procs)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) while waiting: kill them now, quietly
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _kill(procs)
        for _, _, _, log, _ in procs.values():
            log.close()
        print(
            f"interrupted: stopped {len(procs)} running run(s); run the same command again to resume them",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    if failures:
        print(f"{len(failures)} of {total} runs failed:", file=sys.stderr)
        for run, rc in failures:
            print(f"  {plan.output_dir / run.folder} (exit {rc}): see {ERROR_FILE}", file=sys.stderr)
        return 1
    print(f"all {total} runs finished: fedranklite report {plan.output_dir}", flush=True)
    return 0
