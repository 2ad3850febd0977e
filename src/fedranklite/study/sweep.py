"""`fedranklite sweep SPEC.yaml`: a grid of runs over one base config, run by local worker processes or
submitted as one Slurm array job.

The spec (YAML)::

    base: ../configs/experiments/lite_noniid_deadline.yaml   # relative to the spec file
    output_dir: results/sweeps/headline   # optional; default results/sweeps/<spec file stem>; relative to
                                          # the working directory, like output_dir in run configs
    seeds: 10                             # n (seeds 0..n-1) or an explicit list of seeds
    set: {evaluation.max_samples: 200}    # optional overrides applied to every run
    schedulers:                           # named cells (order kept); each a dict of overrides
      fixed: {federation.scheduler.type: fixed}
      cvx: {federation.scheduler.type: cvx}
      lite: {federation.scheduler.type: lite}
    axes:                                 # optional grid: key -> values (cartesian product with cells x seeds)
      deadline.seconds: [60, 90]
    reference: lite                       # optional: the cell `report` pairs against (default: the first)

Every run is one results folder ``<output_dir>/<cell>[/<key=value,...>]/seed<k>/`` (the sweep sets the run's
`seed`, `output_dir` and `experiment_name`, so those three keys cannot be overridden in the spec). All runs'
configs are validated before any starts, and two runs may not share a folder (axis values whose folder
text is the same, like 1 and "1"); `<output_dir>/sweep.json` records the resolved spec and every run
(folder, overrides). A run folder with `done.json` is finished and skipped; one with `checkpoint.pt` but no
`done.json` is resumed (`--resume`). A run whose metrics.json says every round is done (as after a Slurm
array task, which writes no marker) counts as finished and gets its `done.json` then (`--mark-only` does
just that and starts nothing). Before anything is written the sweep refuses (one line) a finished run or a
run to resume whose config.yaml differs from what the spec now makes (other than output_dir and
experiment_name: a moved sweep folder is fine), and a spec that would rewrite sweep.json without finished
runs it lists. `--dry-run` writes nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from fedranklite.config.schema import ConfigError
from fedranklite.core.messages import one_line
from fedranklite.core.safeyaml import YamlError, read_yaml_file

SPEC_KEYS = ("base", "output_dir", "seeds", "set", "schedulers", "axes", "reference")
RESERVED = ("seed", "output_dir", "experiment_name")  # set per run by the sweep
SWEEP_FILE = "sweep.json"
DONE_FILE = "done.json"
ERROR_FILE = "sweep_error.log"
LOG_FILE = "sweep_run.log"
COMMANDS_FILE = "sweep_commands.txt"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # torch reads OMP's


class SpecError(ValueError):
    """A sweep spec that cannot be run as written (one line)."""


@dataclass
class Run:
    cell: str  # the scheduler cell's name
    axes: dict[str, Any]  # axis key -> value of this run
    seed: int
    folder: str  # relative to the sweep's output_dir
    overrides: list[str]  # the --set items, in order
    num_rounds: int = 0
    stop_at_target: bool = False
    clients: int = 0
    clients_per_round: int = 0
    config: dict = field(default_factory=dict, repr=False)  # the validated config (not written to sweep.json)

    @property
    def group(self) -> str:
        """The report's cell: scheduler x axis values, e.g. `lite` or `lite/deadline.seconds=60`."""
        return self.folder.rsplit("/", 1)[0]

    def to_json(self) -> dict:
        return {
            "cell": self.cell,
            "group": self.group,
            "axes": self.axes,
            "seed": self.seed,
            "folder": self.folder,
            "overrides": self.overrides,
            "num_rounds": self.num_rounds,
            "stop_at_target": self.stop_at_target,
            "clients": self.clients,
            "clients_per_round": self.clients_per_round,
        }


@dataclass
class Plan:
    spec_path: Path
    base: Path
    output_dir: Path  # absolute
    seeds: list[int]
    overrides: dict[str, Any]
    cells: dict[str, dict[str, Any]]
    axes: dict[str, list]
    reference: str
    runs: list[Run]

    def to_json(self) -> dict:
        return {
            "spec": str(self.spec_path),
            "base": str(self.base),
            "output_dir": str(self.output_dir),
            "seeds": self.seeds,
            "set": self.overrides,
            "schedulers": self.cells,
            "axes": self.axes,
            "reference": self.reference,
            "runs": [r.to_json() for r in self.runs],
        }


def value_text(value: Any) -> str:
    """`value` as the text after `key=` in --set, so that parse_override reads back exactly `value`."""
    if isinstance(value, str):
        try:
            if value and value.strip() == value and yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("\n...").strip()


def _folder_part(value: Any) -> str:
    text = value if isinstance(value, str) else value_text(value)
    return text.replace("/", "_").replace(" ", "")


def _check_overrides(where: str, overrides: Any) -> dict[str, Any]:
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise SpecError(f"{where}: must be a mapping of dotted keys to values, got {type(overrides).__name__}")
    for key in overrides:
        if not isinstance(key, str) or not key.strip() or not all(p.strip() for p in key.split(".")):
            raise SpecError(f"{where}: {key!r} is not a dotted config key")
        if key.split(".")[0] in RESERVED:
            raise SpecError(f"{where}: {key}: set by the sweep for every run (one of {', '.join(RESERVED)})")
    return overrides


def load_spec(path: str | Path, seeds_override: Optional[int] = None) -> Plan:
    """Read and check a spec, build every run and validate its config; raises SpecError (one line)."""
    from fedranklite.config.files import load_config

    path = Path(path)
    try:
        spec = read_yaml_file(path)
    except FileNotFoundError:
        raise SpecError("file not found") from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a sweep spec") from None
    except YamlError as exc:  # duplicate keys, alias bombs, devices, oversized files, bad syntax
        raise SpecError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot be read: {one_line(exc)}") from None
    if not isinstance(spec, dict):
        raise SpecError("the top level must be a mapping with base, seeds and schedulers")
    unknown = [str(k) for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    for key in ("base", "schedulers"):
        if key not in spec:
            raise SpecError(f"{key}: missing")
    if not isinstance(spec["base"], str) or not spec["base"].strip():
        raise SpecError("base: must be the path of a run config")
    base = (path.parent / spec["base"]).resolve()
    if not base.is_file():
        raise SpecError(f"base: {base} not found")
    output_dir = spec.get("output_dir", f"results/sweeps/{path.stem}")
    if not isinstance(output_dir, str) or not output_dir.strip():  # '' is not "the default": leave the key out
        raise SpecError("output_dir: must be a path (leave the key out for results/sweeps/<spec name>)")
    output_dir = Path(output_dir).expanduser().resolve()

    seeds = spec.get("seeds", 1) if seeds_override is None else seeds_override
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SpecError(f"seeds: {seeds}: need at least one seed")
        seeds = list(range(seeds))
    elif isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise SpecError(f"seeds: {seeds}: seeds must be distinct and >= 0")
    else:
        raise SpecError(f"seeds: {seeds!r}: an int n >= 1 (seeds 0..n-1) or a non-empty list of ints")

    common = _check_overrides("set", spec.get("set"))
    cells = spec["schedulers"]
    if not isinstance(cells, dict) or not cells:
        raise SpecError("schedulers: need at least one named cell, e.g. lite: {federation.scheduler.type: lite}")
    for name, overrides in cells.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or "=" in name:
            raise SpecError(f"schedulers: {name!r}: a cell name must be a plain folder name")
        cells[name] = _check_overrides(f"schedulers.{name}", overrides)
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise SpecError("axes: must be a mapping of dotted keys to lists of values")
    _check_overrides("axes", {k: None for k in axes})
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"axes.{key}: must be a non-empty list of values")
        if len({value_text(v) for v in values}) != len(values):
            raise SpecError(f"axes.{key}: a value is listed twice")
    reference = spec.get("reference", next(iter(cells)))
    if reference not in cells:
        raise SpecError(f"reference: {reference!r} is not one of the cells ({', '.join(cells)})")

    points = [(name, dict(zip(axes, combo))) for name in cells for combo in itertools.product(*axes.values())]
    groups: dict[str, dict] = {}  # folder -> the axis values that make it: two must not share one
    for name, point in points:
        parts = [name] + ([",".join(f"{k}={_folder_part(v)}" for k, v in point.items())] if point else [])
        group = "/".join(parts)
        if group in groups:
            a, b = (", ".join(f"{k}={v!r}" for k, v in pt.items()) for pt in (groups[group], point))
            raise SpecError(f"axes: {a} and {b} make the same run folder {group}/ (give the values distinct text)")
        groups[group] = point

    runs: list[Run] = []
    problems: dict[str, list[str]] = {}  # one line per distinct problem, naming the cells it hits
    for (name, point), group in zip(points, groups):
        cell = cells[name]
        for seed in seeds:
            items = [f"{k}={value_text(v)}" for k, v in (*common.items(), *cell.items(), *point.items())]
            items += [f"seed={seed}", f"output_dir={value_text(str(output_dir / group))}"]
            items.append(f"experiment_name=seed{seed}")
            run = Run(name, point, seed, f"{group}/seed{seed}", items)
            try:
                cfg = load_config(base, items)
            except ConfigError as exc:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                detail = "; ".join(lines[1:] if lines[0] == "invalid configuration:" and len(lines) > 1 else lines)
                cells_hit = problems.setdefault(detail, [])
                if group not in cells_hit:
                    cells_hit.append(group)
                continue
            run.num_rounds, run.stop_at_target = cfg.federation.num_rounds, cfg.evaluation.stop_at_target
            run.clients, run.clients_per_round = cfg.num_clients, cfg.federation.clients_per_round
            run.config = cfg.to_dict()
            runs.append(run)
    if problems:
        raise SpecError(
            "\n".join(f"{'cell' if len(g) == 1 else 'cells'} {', '.join(g)}: {d}" for d, g in problems.items())
        )
    return Plan(path.resolve(), base, output_dir, seeds, common, cells, axes, reference, runs)


# ---- the state of a run folder


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
    return "resume" if (folder / "checkpoint.pt").is_file() else "new"


MOVABLE = ("output_dir", "experiment_name")  # where a run lives, not what it computes: a moved sweep is not stale


def _stale(plan: Plan, run: Run) -> list[str]:
    """Config keys (other than MOVABLE) in which a run's config.yaml differs from what the spec now makes."""
    from fedranklite.config.files import flatten

    try:
        old = flatten(yaml.safe_load((plan.output_dir / run.folder / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(old, dict):
        return []
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


def _mark_done(folder: Path, extra: dict) -> None:
    from fedranklite.core.results_io import write_json_atomic

    write_json_atomic(folder / DONE_FILE, {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def command(plan: Plan, run: Run, resume: bool, program: Optional[list[str]] = None) -> list[str]:
    args = list(program or [sys.executable, "-m", "fedranklite"])
    args += ["run", "--config", str(plan.base)]
    for item in run.overrides:
        args += ["--set", item]
    # a run the sweep starts afresh owns its folder: leftovers of a killed attempt (rounds.jsonl written before
    # the first checkpoint), on a Slurm node too, are replaced rather than refused
    return args + ["--quiet"] + (["--resume"] if resume else ["--overwrite"])


def _final_score(folder: Path) -> Optional[float]:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("final_score")
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _duration(seconds: float) -> str:
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
                    command(plan, run, resume),
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
                    score = _final_score(folder)
                    _mark_done(folder, {"wall_seconds": round(wall, 2), "resumed": resume, "final_score": score})
                    (folder / ERROR_FILE).unlink(missing_ok=True)
                    outcome = f"final {'-' if score is None else f'{score:.4f}'}"
                else:
                    failures.append((run, proc.returncode))
                    cmd = shlex.join(command(plan, run, resume))
                    (folder / ERROR_FILE).write_text(f"exit {proc.returncode}: {cmd}\n{_tail(folder / LOG_FILE)}\n")
                    outcome = f"FAILED (exit {proc.returncode}, see {folder / ERROR_FILE})"
                print(
                    f"[{finished}/{total}] {run.group} seed {run.seed}{' (resumed)' if resume else ''}: {outcome}  "
                    f"wall {wall:.1f}s  ETA {_duration(eta) if todo or procs else '-'}",
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


def slurm_script() -> Path:
    return Path(__file__).resolve().parents[3] / "scripts" / "run_slurm.sh"


def run_slurm(
    plan: Plan, states: dict[str, str], workers: Optional[int], dry_run: bool, mark_command: Optional[list[str]] = None
) -> int:
    todo = [r for r in plan.runs if states[r.folder] != "done"]
    if not todo:
        print(f"all {len(plan.runs)} runs are finished; nothing to submit")
        return 0
    script = slurm_script()
    if not script.is_file():
        print(f"error: {script} not found (the Slurm launcher needs a source checkout)", file=sys.stderr)
        return 2
    lines = [shlex.join(command(plan, r, states[r.folder] == "resume", ["fedranklite"])) for r in todo]
    commands_file = plan.output_dir / COMMANDS_FILE
    array = f"1-{len(todo)}" + (f"%{workers}" if workers else "")
    sbatch = [
        "sbatch",
        f"--array={array}",
        f"--job-name=fedranklite-{plan.output_dir.name}",
        f"--output={plan.output_dir}/slurm-%A_%a.out",
        str(script),
        f"@{commands_file}",
    ]
    if dry_run:  # writes nothing: the lines that would go to the commands file, then the sbatch command
        print(f"{len(todo)} of {len(plan.runs)} runs to submit (dry run: {commands_file} not written):")
        print("\n".join(lines))
        print(shlex.join(sbatch))
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found on PATH (use --dry-run to see the command)", file=sys.stderr)
        return 2
    from fedranklite.core.results_io import write_text_atomic

    write_text_atomic(commands_file, "\n".join(lines) + "\n")
    print(f"{len(todo)} of {len(plan.runs)} runs to submit (commands in {commands_file})")
    proc = subprocess.run(sbatch, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(f"error: sbatch exited {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    mark = shlex.join(mark_command or ["fedranklite", "sweep", str(plan.spec_path), "--mark-only"])
    print(
        f"when the array is done: {mark} (marks finished runs, starts nothing); "
        f"then fedranklite report {shlex.quote(str(plan.output_dir))}"
    )
    return 0


def mark_only(plan: Plan, states: dict[str, str]) -> int:
    """Write done.json for the runs whose metrics.json says they finished; start nothing."""
    marked = 0
    for run in plan.runs:
        folder = plan.output_dir / run.folder
        if states[run.folder] == "done" and not (folder / DONE_FILE).exists():
            _mark_done(folder, {"from": "metrics.json", "final_score": _final_score(folder)})
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
) -> int:
    try:
        if workers is not None and workers < 1:
            raise SpecError("--workers: need at least 1")
        if mark and dry_run:
            raise SpecError("--mark-only and --dry-run: choose one")
        plan = load_spec(spec, seeds)
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
    if launcher == "slurm" and dry_run:
        return run_slurm(plan, states, workers, dry_run=True)
    from fedranklite.core.results_io import write_json_atomic

    write_json_atomic(plan.output_dir / SWEEP_FILE, plan.to_json())
    for run in plan.runs:  # finished without a marker (a Slurm task, a sweep killed after the run ended)
        folder = plan.output_dir / run.folder
        if states[run.folder] == "done" and not (folder / DONE_FILE).exists():
            _mark_done(folder, {"from": "metrics.json", "final_score": _final_score(folder)})
    if launcher == "slurm":
        again = ["fedranklite", "sweep", str(plan.spec_path)] + (["--seeds", str(seeds)] if seeds is not None else [])
        return run_slurm(plan, states, workers, dry_run=False, mark_command=again + ["--mark-only"])
    return run_local(plan, states, workers or 1)
