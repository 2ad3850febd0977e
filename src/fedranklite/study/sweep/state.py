"""The state of a sweep's run folders: finished, to resume or new; whether a folder may be reused by the plan
as it is now; the done marker; and the `fedranklite run` command of a run, which every launcher starts.

A run folder with `done.json` is finished and skipped; one with a checkpoint but no `done.json` is resumed.
A run whose metrics.json says every round is done (as after a cluster job, which writes no marker) counts as
finished and gets its `done.json` from the sweep. Before anything is written the sweep refuses (one line) a
finished run or a run to resume whose config.yaml differs from what the spec now makes (other than output_dir
and experiment_name: a moved sweep folder is fine), and a spec that would rewrite sweep.json without finished
runs it lists.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from fedranklite.config.files import flatten
from fedranklite.core.results_io import write_json_atomic
from fedranklite.run.checkpoint import CHECKPOINT_NAME, with_defaults
from fedranklite.study.sweep.spec import Plan, Run

SWEEP_FILE = "sweep.json"
DONE_FILE = "done.json"
ERROR_FILE = "sweep_error.log"
LOG_FILE = "sweep_run.log"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # torch reads OMP's


def metrics_complete(folder: Path, num_rounds: int, stop_at_target: bool) -> bool:
    """metrics.json says the run did all its rounds (or stopped at its target)."""
    try:
        data = json.loads((folder / "metrics.json").read_text())
        return int(data["rounds_completed"]) >= num_rounds or bool(
            stop_at_target and (data.get("time_to_target") or {}).get("round") is not None
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def run_finished(folder: Path, num_rounds: int, stop_at_target: bool) -> bool:
    return (folder / DONE_FILE).is_file() or metrics_complete(folder, num_rounds, stop_at_target)


def run_state(plan: Plan, run: Run) -> str:
    """done | resume | new"""
    folder = plan.output_dir / run.folder
    if run_finished(folder, run.num_rounds, run.stop_at_target):
        return "done"
    return "resume" if has_checkpoint(folder) else "new"


def has_checkpoint(folder: Path) -> bool:
    """The run folder holds a checkpoint to resume from."""
    return (folder / CHECKPOINT_NAME).is_file()


MOVABLE = ("output_dir", "experiment_name")  # where a run lives, not what it computes: a moved sweep is not stale


def _stale(plan: Plan, run: Run) -> list[str]:
    """Config keys (other than MOVABLE) in which a run's config.yaml differs from what the spec now makes."""
    try:
        saved = yaml.safe_load((plan.output_dir / run.folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(saved, dict):
        return []
    # a key added after the run was made counts at its default (what that run computed with), as on --resume
    old = flatten(with_defaults(saved))
    new = flatten(yaml.safe_load(yaml.safe_dump(run.config)))
    return sorted(k for k in set(old) | set(new) if k not in MOVABLE and old.get(k) != new.get(k))


def _shrunk(plan: Plan) -> list[str]:
    """Folders of finished runs that the sweep.json already in output_dir lists and this plan lacks."""
    try:
        old = json.loads((plan.output_dir / SWEEP_FILE).read_text())["runs"]
        entries = [e for e in old if isinstance(e, dict) and isinstance(e.get("folder"), str)]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    folders = {r.folder for r in plan.runs}
    lost = []
    for e in entries:
        if e["folder"] in folders:
            continue
        try:
            if run_finished(plan.output_dir / e["folder"], int(e.get("num_rounds", 0)), bool(e.get("stop_at_target"))):
                lost.append(e["folder"])
        except (TypeError, ValueError, OSError):
            continue
    return lost


def check_reuse(plan: Plan, states: dict[str, str]) -> Optional[str]:
    """Why this plan cannot use its output_dir as it is (one line), or None: a finished run or one to resume
    was made with another config, or the sweep.json there lists finished runs this plan would drop."""
    stale = [(r, keys) for r in plan.runs if states[r.folder] in ("done", "resume") and (keys := _stale(plan, r))]
    if stale:
        run, keys = stale[0]
        more = f" (and {len(stale) - 1} more run(s))" if len(stale) > 1 else ""
        what = "finished run" if states[run.folder] == "done" else "run to resume"
        shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        return (
            f"{what} {run.folder} under {plan.output_dir} was made with another config ({shown}){more}; "
            "use another output_dir or remove them"
        )
    lost = _shrunk(plan)
    if lost:
        return (
            f"{plan.output_dir / SWEEP_FILE} lists {len(lost)} finished run(s) this spec does not make "
            f"(e.g. {lost[0]}); rewriting it would drop them from the report: use a new output_dir"
        )
    return None


def mark_done(folder: Path, extra: dict) -> None:
    write_json_atomic(folder / DONE_FILE, {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def command(plan: Plan, run: Run, resume: bool, program: Optional[list[str]] = None) -> list[str]:
    """The `fedranklite run` argument list of one run (`program`: how to call fedranklite, default this
    interpreter's module)."""
    args = list(program or [sys.executable, "-m", "fedranklite"])
    args += ["run", "--config", str(plan.base)]
    for item in run.overrides:
        args += ["--set", item]
    # a run the sweep starts afresh owns its folder: leftovers of a killed attempt (rounds.jsonl written before
    # the first checkpoint), on a Slurm node too, are replaced rather than refused
    return args + ["--quiet"] + (["--resume"] if resume else ["--overwrite"])


def final_score(folder: Path) -> Optional[float]:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("final_score")
    except (OSError, ValueError):
        return None
