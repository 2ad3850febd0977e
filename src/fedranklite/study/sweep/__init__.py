"""`fedranklite sweep SPEC.yaml`: a grid of runs over one base config, run by local worker processes or
submitted to Slurm as one array job through submitit.

- spec.py: the spec read and checked, its size bounded, its plan (every run's folder and validated config);
- state.py: what each run folder holds (finished, to resume, new), the reuse checks, a run's command;
- local.py: the local launcher (worker processes on this machine);
- slurm.py: the Slurm launcher (submitit: array job, throttle, per-run logs, resubmission of failed runs).

`<output_dir>/sweep.json` records the resolved spec and every run (folder, overrides); `fedranklite report
<output_dir>` reads it. `--dry-run` writes nothing; `--mark-only` marks finished runs and starts nothing.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Optional, Sequence

from fedranklite.study.sweep import local, slurm
from fedranklite.study.sweep.spec import MAX_RUNS, Plan, Run, SpecError, load_spec, plan_size, value_text
from fedranklite.study.sweep.state import (
    DONE_FILE,
    ERROR_FILE,
    LOG_FILE,
    SWEEP_FILE,
    check_reuse,
    command,
    final_score,
    mark_done,
    metrics_complete,
    run_finished,
    run_state,
)

__all__ = [
    "DONE_FILE",
    "ERROR_FILE",
    "LOG_FILE",
    "MAX_RUNS",
    "SWEEP_FILE",
    "Plan",
    "Run",
    "SpecError",
    "check_reuse",
    "command",
    "load_spec",
    "main",
    "mark_only",
    "metrics_complete",
    "plan_size",
    "run_finished",
    "run_state",
    "value_text",
]


def mark_only(plan: Plan, states: dict[str, str]) -> int:
    """Write done.json for the runs whose metrics.json says they finished; start nothing."""
    marked = 0
    for run in plan.runs:
        folder = plan.output_dir / run.folder
        if states[run.folder] == "done" and not (folder / DONE_FILE).exists():
            mark_done(folder, {"from": "metrics.json", "final_score": final_score(folder)})
            marked += 1
    done = sum(states[r.folder] == "done" for r in plan.runs)
    print(
        f"sweep {plan.output_dir}: marked {marked} run(s) finished from metrics.json; "
        f"{done} of {len(plan.runs)} runs finished, {len(plan.runs) - done} not (yet)"
    )
    if done:
        print(f"fedranklite report {shlex.quote(str(plan.output_dir))}")
    return 0


def main(
    spec: str,
    workers: Optional[int],
    launcher: str,
    dry_run: bool,
    seeds: Optional[int],
    mark: bool = False,
    retries: Optional[int] = None,
    overrides: Sequence[str] = (),
) -> int:
    """`retries`: resubmissions of a failed run under the slurm launcher (default: the spec's slurm.retries);
    `overrides`: --set KEY=VALUE items applied to every run after the spec's own `set`."""
    try:
        if workers is not None and workers < 1:
            raise SpecError("--workers: need at least 1")
        if retries is not None and retries < 0:
            raise SpecError("--retries: need 0 or more")
        if mark and dry_run:
            raise SpecError("--mark-only and --dry-run: choose one")
        plan = load_spec(spec, seeds, overrides)
        if retries is not None:
            plan.slurm = dataclasses.replace(plan.slurm, retries=retries)
    except SpecError as exc:
        for line in str(exc).splitlines():
            print(f"{spec}: {line}", file=sys.stderr)
        return 2
    states = {r.folder: run_state(plan, r) for r in plan.runs}
    problem = check_reuse(plan, states)
    if problem:
        print(f"{spec}: {problem}", file=sys.stderr)
        return 2
    if mark:
        return mark_only(plan, states)
    if dry_run and launcher == "local":  # writes nothing
        for run in plan.runs:
            state = states[run.folder]
            print(
                f"{state:>6}  {run.folder}: "
                + ("-" if state == "done" else shlex.join(command(plan, run, state == "resume")))
            )
        return 0
    if launcher == "slurm":
        again = ["fedranklite", "sweep", str(plan.spec_path)] + (["--seeds", str(seeds)] if seeds is not None else [])
        again += [arg for item in overrides for arg in ("--set", item)]
        try:
            launch = slurm.prepare(plan, states, workers, dry_run)
        except slurm.LauncherError as exc:
            print(f"{spec}: {exc}", file=sys.stderr)
            return 2
        if dry_run:
            return 0
    from fedranklite.core.results_io import write_json_atomic
    from fedranklite.run.folder_lock import OutputFolderError, acquire

    try:  # one sweep per output folder at a time (held until this process ends, a kill included)
        acquire(plan.output_dir)
    except OutputFolderError as exc:
        print(f"{spec}: {exc}", file=sys.stderr)
        return 2
    write_json_atomic(plan.output_dir / SWEEP_FILE, plan.to_json())
    for run in plan.runs:  # finished without a marker (a cluster job, a sweep killed after the run ended)
        folder = plan.output_dir / run.folder
        if states[run.folder] == "done" and not (folder / DONE_FILE).exists():
            mark_done(folder, {"from": "metrics.json", "final_score": final_score(folder)})
    if launcher == "slurm":
        return slurm.run_slurm(launch, mark_command=again + ["--mark-only"])
    return local.run_local(plan, states, workers or 1)
