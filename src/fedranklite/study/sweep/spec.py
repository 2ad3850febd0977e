"""A sweep spec read, checked and turned into its plan: every run's cell, axis values, seed, folder and
validated config (`load_spec`).

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
    slurm:                                # optional: how `--launcher slurm` submits (sweep/slurm.py)
      partition: gpu                      # also: cluster (slurm | local), timeout_min, mem_gb, cpus_per_task,
      timeout_min: 120                    # gpus_per_node, array_parallelism, retries, setup, additional

Every run is one results folder ``<output_dir>/<cell>[/<key=value,...>]/seed<k>/`` (the sweep sets the run's
`seed`, `output_dir` and `experiment_name`, so those three keys cannot be overridden in the spec). All runs'
configs are validated before any starts, and two runs may not share a folder (axis values whose folder
text is the same, like 1 and "1"). A plan holds at most MAX_RUNS runs: its size (cells x axis points x seeds)
is computed from the spec and refused above that before any run is built.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from fedranklite.config.schema import ConfigError
from fedranklite.core.messages import one_line
from fedranklite.core.safeyaml import YamlError, read_yaml_file

SPEC_KEYS = ("base", "output_dir", "seeds", "set", "schedulers", "axes", "reference", "slurm")
RESERVED = ("seed", "output_dir", "experiment_name")  # set per run by the sweep
MAX_RUNS = 100_000  # a bigger plan is refused before it is built (each run's config is validated up front)


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


@dataclass(frozen=True)
class SlurmSettings:
    """The spec's `slurm:` section: what `--launcher slurm` asks of the cluster for each run (submitit's
    executor parameters) and how often it resubmits a run that failed."""

    cluster: str = "slurm"  # "local": submitit's local executor (the same jobs as processes on this machine)
    partition: Optional[str] = None
    timeout_min: int = 120
    mem_gb: Optional[float] = None
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    array_parallelism: Optional[int] = None  # at most this many runs at once (default: --workers, else all)
    retries: int = 1  # resubmissions of a run that failed, each resuming from its checkpoint when it has one
    setup: tuple[str, ...] = ()  # shell lines each job runs first (module load ..., source venv/bin/activate)
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {account: myproj}

    def to_json(self) -> dict:
        return {
            "cluster": self.cluster,
            "partition": self.partition,
            "timeout_min": self.timeout_min,
            "mem_gb": self.mem_gb,
            "cpus_per_task": self.cpus_per_task,
            "gpus_per_node": self.gpus_per_node,
            "array_parallelism": self.array_parallelism,
            "retries": self.retries,
            "setup": list(self.setup),
            "additional": dict(self.additional),
        }


_SLURM_INTS = {"timeout_min": 1, "cpus_per_task": 1, "gpus_per_node": 0, "array_parallelism": 1, "retries": 0}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_slurm(section: Any) -> SlurmSettings:
    """The spec's `slurm:` mapping as SlurmSettings; SpecError (one line naming slurm.<key>) otherwise."""
    if section is None:
        return SlurmSettings()
    if not isinstance(section, dict):
        raise SpecError(f"slurm: must be a mapping of launcher settings, got {type(section).__name__}")
    known = tuple(SlurmSettings.__dataclass_fields__)
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in known:
            raise SpecError(f"slurm: unknown key {key!r} (known: {', '.join(known)})")
        if key == "cluster":
            if value not in ("slurm", "local"):
                raise SpecError(f"slurm.cluster: {value!r}: slurm or local")
        elif key == "partition":
            if not isinstance(value, str) or not value.strip():
                raise SpecError("slurm.partition: must be a partition name")
        elif key == "mem_gb":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
                raise SpecError(f"slurm.mem_gb: {value!r}: a number of GB > 0")
            value = float(value)
        elif key in _SLURM_INTS:
            if not _int(value) or not _SLURM_INTS[key] <= value <= 10**6:
                raise SpecError(f"slurm.{key}: {value!r}: an integer >= {_SLURM_INTS[key]}")
        elif key == "setup":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise SpecError("slurm.setup: must be a list of shell lines")
            value = tuple(value)
        elif key == "additional":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, (str, int)) and not isinstance(v, bool)
                for k, v in value.items()
            ):
                raise SpecError("slurm.additional: must map sbatch option names to strings or integers")
        values[key] = value
    return SlurmSettings(**values)


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
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

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
            "slurm": self.slurm.to_json(),
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


def plan_size(num_cells: int, axis_lengths: list[int], num_seeds: int) -> int:
    """How many runs a spec makes: cells x the product of the axes' lengths x seeds (exact integers)."""
    return num_cells * math.prod(axis_lengths) * num_seeds


def check_size(cells: dict, axes: dict, num_seeds: int, seeds_key: str = "seeds") -> int:
    """The plan's size, computed from the spec alone; SpecError naming the key that contributes most when it
    is above MAX_RUNS, before any run (or the list of seeds) is built."""
    lengths = [len(v) for v in axes.values()]
    total = plan_size(len(cells), lengths, num_seeds)
    if total <= MAX_RUNS:
        return total
    factors = [(num_seeds, seeds_key), (len(cells), "schedulers")]
    factors += [(n, f"axes.{k}") for k, n in zip(axes, lengths)]
    key = max(factors, key=lambda f: f[0])[1]
    raise SpecError(
        f"{key}: the plan would hold {total:,} runs ({len(cells):,} cells x {math.prod(lengths):,} axis points x "
        f"{num_seeds:,} seeds), more than the {MAX_RUNS:,} a sweep may hold"
    )


def command_line_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items of the sweep command as a spec's `set` mapping (dotted key -> value)."""
    from fedranklite.config.files import parse_override
    from fedranklite.config.schema import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        try:
            parts, value = parse_override(item)
        except ConfigError as exc:
            raise SpecError(str(exc)) from None
        out[".".join(parts)] = value
    return _check_overrides("--set", out)


def load_spec(path: str | Path, seeds_override: Optional[int] = None, set_items: Sequence[str] = ()) -> Plan:
    """Read and check a spec, build every run and validate its config; raises SpecError (one line).
    `set_items` (the command's --set KEY=VALUE) apply to every run after the spec's own `set`."""
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

    seeds_key = "seeds" if seeds_override is None else "--seeds"
    seeds = spec.get("seeds", 1) if seeds_override is None else seeds_override
    if _int(seeds):
        if seeds < 1:
            raise SpecError(f"{seeds_key}: {seeds}: need at least one seed")
        num_seeds = seeds  # the list is made once the plan's size is known to be within MAX_RUNS
    elif isinstance(seeds, list) and seeds and all(_int(s) for s in seeds):
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise SpecError(f"{seeds_key}: seeds must be distinct and >= 0")
        num_seeds = len(seeds)
    else:
        shown = repr(seeds) if len(repr(seeds)) <= 80 else f"a {type(seeds).__name__}"
        raise SpecError(f"{seeds_key}: {shown}: an int n >= 1 (seeds 0..n-1) or a non-empty list of ints")

    common = {**_check_overrides("set", spec.get("set")), **command_line_overrides(set_items)}
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
    check_size(cells, axes, num_seeds, seeds_key)
    for key, values in axes.items():
        if len({value_text(v) for v in values}) != len(values):
            raise SpecError(f"axes.{key}: a value is listed twice")
    if _int(seeds):
        seeds = list(range(seeds))
    slurm = parse_slurm(spec.get("slurm"))
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
    return Plan(path.resolve(), base, output_dir, seeds, common, cells, axes, reference, runs, slurm)
