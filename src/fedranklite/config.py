"""Experiment configuration: YAML with `_base_` inheritance, deep merge, `--set` overrides, typed schema.

Every problem is reported before any model or data is touched, as ``<file>: <dotted.key>: <why>``,
where <file> is the YAML file (or ``--set``) that last wrote that key.
"""
from __future__ import annotations

import difflib
import math
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A configuration that cannot run. The message names the file and the dotted key."""


# --------------------------------------------------------------------------------------------------
# Schema. `extra="forbid"` turns unknown keys into errors; `frozen=True` keeps a run's config fixed.
# --------------------------------------------------------------------------------------------------
def _is_number_type(annotation: Any) -> bool:
    """int, float or Optional of either."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode would turn `num_rounds: true` into 1: a YAML boolean is never a number here
        if isinstance(value, bool) and info.field_name in cls.model_fields \
                and _is_number_type(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got the boolean {value}")
        return value


class LoraConfig(_Section):
    r_max: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)


class ModelConfig(_Section):
    name: str = "bundled:minilm-l6"
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    cache_dir: Optional[str] = None  # converted GGUF checkpoints (default $FEDRANKLITE_CACHE or ~/.cache/fedranklite)
    max_length: int = Field(64, ge=4)
    # sentence pairs: one sequence (cross) or each text apart (siamese, sentence-transformers' bi-encoder way)
    pair_encoding: Literal["auto", "cross", "siamese"] = "auto"
    head_dropout: float = Field(0.1, ge=0, lt=1)
    lora: LoraConfig = LoraConfig()


class SchedulerConfig(_Section):
    type: str = "lite"
    r_min: int = Field(2, ge=1)
    r_max: Optional[int] = Field(None, ge=1)  # defaults to model.lora.r_max
    r_bar: float = Field(8.0, gt=0)  # mean rank per selected client: budget = r_bar * num_selected
    rank: Optional[int] = Field(None, ge=1)  # `fixed`: the rank for everyone (defaults to r_bar)
    ema: float = Field(0.5, gt=0, le=1)  # weight of the newest observation
    gain_weight: float = Field(1.0, ge=0)
    throughput_weight: float = Field(0.5, ge=0)
    deadline_penalty: float = Field(0.5, ge=0, le=1)
    normalize: bool = True  # divide each EMA by its mean over the selected clients (scale-free weights)
    solver: Literal["auto", "cvxpy", "greedy"] = "auto"  # `cvx` only


class FederationConfig(_Section):
    num_clients: Optional[int] = Field(None, ge=1)  # must equal the sum of tier counts when given
    num_rounds: int = Field(10, ge=1)
    clients_per_round: int = Field(5, ge=1)
    aggregation: str = "blockwise"
    scheduler: SchedulerConfig = SchedulerConfig()
    # client updates further than this many times the round's median from the global adapter are
    # rejected (null: no norm check; NaN/Inf and wrong shapes are always rejected)
    max_update_norm_ratio: Optional[float] = Field(10.0, gt=1)


class TrainingConfig(_Section):
    local_epochs: int = Field(1, ge=1)
    max_local_steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    # learning rate of the task head (null: lr). A new head on frozen features needs far larger steps than
    # the LoRA factors to move within the few dozen steps of a laptop budget
    head_lr: Optional[float] = Field(None, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    probe_samples: int = Field(32, ge=0)  # per-client loss before/after local training (0: use train loss)


class PartitionConfig(_Section):
    type: str = "iid"
    alpha: float = Field(0.5, gt=0)  # dirichlet concentration
    labels_per_client: int = Field(2, ge=1)  # label_skew
    num_bins: int = Field(5, ge=2)  # regression targets are binned for label-based partitions


class DataConfig(_Section):
    source: Literal["embedded", "hub", "files", "glue"] = "embedded"
    name: str = "sentiment"  # embedded task name, hub dataset name, or GLUE task (sst2, qnli, mrpc, stsb, rte)
    data_dir: Optional[str] = None  # glue: local folder in the GLUE TSV layout (else $FEDRANKLITE_GLUE_DIR, else hub)
    subset: Optional[str] = None  # hub configuration name (e.g. "sst2" of "glue")
    train_split: str = "train"
    eval_split: str = "test"
    train_file: Optional[str] = None
    eval_file: Optional[str] = None
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1, max_length=2)
    label_column: str = "label"
    task: Literal["classification", "regression"] = "classification"
    num_labels: Optional[int] = Field(None, ge=1)  # inferred from the training labels when absent
    label_names: Optional[list[str]] = None  # string labels, mapped to their index
    embedded_train_size: int = Field(3000, ge=10)
    embedded_eval_size: int = Field(400, ge=10)
    samples_per_client: Optional[int] = Field(None, ge=1)  # cap on each client's training rows
    partition: PartitionConfig = PartitionConfig()


class TierConfig(_Section):
    compute_factor: float = Field(..., gt=0)
    num_clients: int = Field(..., ge=1)
    memory_gb: float = Field(..., gt=0)
    bandwidth_mbps: Optional[float] = Field(None, gt=0)  # None: communication time not simulated


class DeadlineConfig(_Section):
    seconds: Optional[float] = Field(None, gt=0)  # None: no deadline
    straggler_policy: str = "wait"


class TimingConfig(_Section):
    mode: Literal["measured", "analytic"] = "measured"
    # analytic mode: seconds per training sample on a compute_factor=1 device, at rank 0 and per rank unit
    sec_per_sample: float = Field(0.05, ge=0)
    sec_per_sample_per_rank: float = Field(0.005, ge=0)


class EvaluationConfig(_Section):
    eval_every: int = Field(1, ge=1)
    max_samples: Optional[int] = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    metric: Optional[str] = None  # default: accuracy (classification), pearson (regression)
    target: Optional[float] = None
    stop_at_target: bool = False


class MetricsConfig(_Section):
    fairness_percentiles: list[float] = Field(default_factory=lambda: [10.0, 50.0, 90.0], min_length=1)
    checkpoint: bool = True  # atomic checkpoint after every round (what `--resume` continues from)
    tracking: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # off by default
    # per-client fields of a round record: a list of dicts (full) or one list per field (columns: compact,
    # for thousands of clients per round; `ranks` and per-client maps are then left out of metrics.json)
    client_records: Literal["full", "columns"] = "full"
    summary_every: int = Field(1, ge=1)  # rewrite metrics.json every k rounds (and after the last)


class FlowerConfig(_Section):
    """engine.backend: flower (see src/fedranklite/flower/ and the README's "Running on Flower")."""

    mode: Literal["simulation", "deployment"] = "simulation"
    num_supernodes: Optional[int] = Field(None, ge=1)  # default: one SuperNode per client (partition-id = cid)
    # wall seconds the server waits for the replies of a round (null: until every client answered or its
    # SuperNode is reported offline); a client that has not answered by then is a straggler
    round_timeout: Optional[float] = Field(None, gt=0)
    # simulation: CPUs per virtual client (null: every CPU, so one Ray worker keeps the model resident)
    client_cpus: Optional[float] = Field(None, gt=0)
    # deployment: where the SuperLink listens (its HTTP API) and the first SuperNode runtime port
    superlink_host: str = "127.0.0.1"
    superlink_port: int = Field(9300, ge=0, le=65535)  # 0: a free port
    supernode_base_port: int = Field(9310, ge=0, le=65535)  # SuperNode i: base + i (0: free ports)
    startup_timeout: float = Field(120.0, gt=0)  # deployment: seconds to wait for the SuperLink / SuperNodes


class SurrogateConfig(_Section):
    """engine.backend: surrogate (what-if simulation, see src/fedranklite/surrogate.py)."""

    calibration: Optional[str] = None  # surrogate.json from `fedranklite calibrate <results dir>`
    rows_per_client: Optional[int] = Field(None, ge=1)  # default: the sizes of the config's real data partition


class EngineConfig(_Section):
    backend: Literal["local", "flower", "surrogate"] = "local"
    flower: FlowerConfig = FlowerConfig()
    surrogate: SurrogateConfig = SurrogateConfig()


class Config(_Section):
    experiment_name: str = "default"
    seed: int = 0
    output_dir: str = "results"
    device: str = "auto"
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    tiers: dict[str, TierConfig] = Field(default_factory=dict)
    deadline: DeadlineConfig = DeadlineConfig()
    timing: TimingConfig = TimingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    metrics: MetricsConfig = MetricsConfig()
    engine: EngineConfig = EngineConfig()

    # ---- derived values, so no caller recomputes them differently ----
    @property
    def num_clients(self) -> int:
        return sum(t.num_clients for t in self.tiers.values())

    @property
    def r_max(self) -> int:
        return self.federation.scheduler.r_max or self.model.lora.r_max

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) / self.experiment_name

    def client_tiers(self) -> list[str]:
        """Tier name of every client id, in tier order (ids 0..N-1)."""
        return [name for name, tier in self.tiers.items() for _ in range(tier.num_clients)]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------
# YAML loading, inheritance and merge
# --------------------------------------------------------------------------------------------------
def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge key by key; lists and scalars in `override` replace those in `base`."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _record_sources(tree: Any, source: str, prefix: str, sources: dict[str, str]) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            sources[dotted] = source
            _record_sources(value, source, dotted, sources)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


PRESET_PREFIXES = ("glue:",)


def _preset(name: str, path: Path) -> dict:
    """The config tree of a virtual base such as `glue:rte` (the task defaults in fedranklite/glue.py)."""
    from .data import DataError
    from .glue import preset

    try:
        return preset(name.split(":", 1)[1])
    except DataError as exc:
        raise ConfigError(f"{path}: {BASE_KEY}: {name}: {exc}") from None


def _load_tree(path: Path, chain: tuple[Path, ...], sources: dict[str, str]) -> dict:
    """Load `path` with its `_base_` chain resolved (bases relative to the file that names them)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: {BASE_KEY}: cyclic inheritance: {cycle}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: {BASE_KEY}: must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        if base.startswith(PRESET_PREFIXES):  # a virtual base generated by the project, e.g. "glue:rte"
            preset_tree = _preset(base, path)
            _record_sources(preset_tree, base, "", sources)
            merged = deep_merge(merged, preset_tree)
            continue
        base_path = path.parent / base
        if not base.strip() or not base_path.is_file():
            why = "is not a file" if base_path.exists() else "not found"
            raise ConfigError(f"{path}: {BASE_KEY}: base file {base_path} {why}")
        merged = deep_merge(merged, _load_tree(base_path, (*chain, path), sources))
    _record_sources(data, str(path), "", sources)
    return deep_merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value parsed as YAML, so 3 -> int, [1,2] -> list, null -> None)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. federation.num_rounds=5")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {item}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(tree: dict, overrides: list[str], sources: dict[str, str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        patch: Any = value
        for part in reversed(parts):
            patch = {part: patch}
        # keys the override creates (or turns into a section) are its own, so an error in them names --set
        node: Any = tree
        for i, part in enumerate(parts[:-1]):
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                for j in range(i, len(parts)):
                    sources[".".join(parts[: j + 1])] = "--set"
                break
        tree = deep_merge(tree, patch)
        sources[".".join(parts)] = "--set"
        _record_sources(value, "--set", ".".join(parts), sources)
    return tree


# --------------------------------------------------------------------------------------------------
# Validation: schema errors, then semantic checks, all reported together
# --------------------------------------------------------------------------------------------------
def _source_of(key: str, sources: dict[str, str], default: str) -> str:
    parts = key.split(".")
    while parts:
        found = sources.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return default


def _known_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc` (for 'did you mean' on a misspelt key)."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", {})
        if part in fields:
            current = _unwrap_model(fields[part].annotation)
        # else: a dict key such as a tier name; its value type is already `current`
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _format_pydantic(exc: ValidationError, sources: dict[str, str], default: str) -> list[str]:
    messages = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        where = _source_of(dotted, sources, default)
        if err["type"] == "extra_forbidden":
            known = _known_fields(Config, loc)
            if len(loc) == 1:
                known.append(BASE_KEY)  # a misspelt `_base_` at the top level
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            messages.append(f"{where}: {dotted}: unknown key{hint}")
        else:
            given = err.get("input")
            given_txt = "" if isinstance(given, dict) else f" (got {given!r})"
            messages.append(f"{where}: {dotted}: {err['msg']}{given_txt}")
    return messages


def semantic_problems(cfg: Config) -> list[tuple[str, str]]:
    """Checks that need more than one field or a registry. Returns (dotted key, message) pairs."""
    from .aggregation import AGGREGATORS
    from .data import EMBEDDED_TASKS, PARTITIONS
    from .metrics import SCORE_METRICS
    from .schedulers import SCHEDULERS
    from .stragglers import STRAGGLER_POLICIES

    problems: list[tuple[str, str]] = []

    def unknown(key: str, value: str, known) -> None:
        close = difflib.get_close_matches(value, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append((key, f"unknown name {value!r}{hint}; choose one of {sorted(known)}"))

    sched = cfg.federation.scheduler
    if sched.type not in SCHEDULERS:
        unknown("federation.scheduler.type", sched.type, SCHEDULERS)
    if cfg.federation.aggregation not in AGGREGATORS:
        unknown("federation.aggregation", cfg.federation.aggregation, AGGREGATORS)
    if cfg.data.partition.type not in PARTITIONS:
        unknown("data.partition.type", cfg.data.partition.type, PARTITIONS)
    if cfg.deadline.straggler_policy not in STRAGGLER_POLICIES:
        unknown("deadline.straggler_policy", cfg.deadline.straggler_policy, STRAGGLER_POLICIES)
    if cfg.evaluation.metric is not None and cfg.evaluation.metric not in SCORE_METRICS:
        unknown("evaluation.metric", cfg.evaluation.metric, SCORE_METRICS)
    if cfg.data.source == "embedded" and cfg.data.name not in EMBEDDED_TASKS:
        unknown("data.name", cfg.data.name, EMBEDDED_TASKS)
    if cfg.data.source == "glue":
        from .glue import GLUE_TASKS

        if cfg.data.name not in GLUE_TASKS:
            unknown("data.name", cfg.data.name, GLUE_TASKS)
        elif cfg.data.task != GLUE_TASKS[cfg.data.name].task:
            problems.append(("data.task", f"GLUE {cfg.data.name} is a {GLUE_TASKS[cfg.data.name].task} task "
                                          f"(inherit its defaults with _base_: [..., 'glue:{cfg.data.name}'])"))
    if cfg.data.data_dir is not None and not Path(cfg.data.data_dir).expanduser().is_dir():
        problems.append(("data.data_dir", f"not a folder: {cfg.data.data_dir} (relative paths are read from the "
                                          f"current directory, {Path.cwd()})"))

    r_max = cfg.r_max
    if sched.r_max is not None and sched.r_max > cfg.model.lora.r_max:
        problems.append(("federation.scheduler.r_max",
                         f"{sched.r_max} exceeds model.lora.r_max={cfg.model.lora.r_max}, the rank the adapters carry"))
    if sched.r_min > r_max:
        problems.append(("federation.scheduler.r_min", f"r_min={sched.r_min} is greater than r_max={r_max}"))
    if not (sched.r_min <= sched.r_bar <= r_max):
        problems.append(("federation.scheduler.r_bar",
                         f"r_bar={sched.r_bar} must lie within [r_min={sched.r_min}, r_max={r_max}]"))
    if sched.rank is not None and not (sched.r_min <= sched.rank <= r_max):
        problems.append(("federation.scheduler.rank",
                         f"rank={sched.rank} must lie within [r_min={sched.r_min}, r_max={r_max}]"))

    if not cfg.tiers:
        problems.append(("tiers", "at least one hardware tier is needed"))
    n = cfg.num_clients
    if cfg.federation.num_clients is not None and cfg.tiers and cfg.federation.num_clients != n:
        problems.append(("federation.num_clients",
                         f"{cfg.federation.num_clients} differs from the tiers' total of {n} clients"))
    if cfg.tiers and cfg.federation.clients_per_round > n:
        problems.append(("federation.clients_per_round",
                         f"{cfg.federation.clients_per_round} is more than the {n} clients in the tiers"))

    data = cfg.data
    if data.source == "files" and not data.train_file:
        problems.append(("data.train_file", "required when data.source is 'files'"))
    from .data import FILE_TYPES

    for key in ("train_file", "eval_file"):
        value = getattr(data, key)
        if data.source != "files" or not value:
            continue
        if not Path(value).is_file():
            problems.append((f"data.{key}", f"file not found: {value} (relative paths are read from the current "
                                            f"directory, {Path.cwd()})"))
        elif Path(value).suffix.lower() not in FILE_TYPES:
            problems.append((f"data.{key}", f"unsupported file type {Path(value).suffix!r} of {value}; "
                                            f"use one of {sorted(FILE_TYPES)}"))
    if data.task == "regression" and data.num_labels not in (None, 1):
        problems.append(("data.num_labels", "regression uses a single output (num_labels 1)"))
    if data.task == "classification" and data.num_labels == 1:
        problems.append(("data.num_labels", "classification needs at least 2 labels"))
    if data.label_names is not None and data.task == "classification":
        if len(data.label_names) < 2 or len(set(data.label_names)) != len(data.label_names):
            problems.append(("data.label_names", f"need at least 2 distinct names, got {data.label_names}"))
        elif data.num_labels is not None and data.num_labels != len(data.label_names):
            problems.append(("data.label_names", f"{len(data.label_names)} names but data.num_labels="
                                                 f"{data.num_labels}"))
    if data.source == "embedded" and data.task != "classification":
        problems.append(("data.task", f"the embedded task {data.name!r} is a classification task"))
    if data.partition.type == "label_skew" and data.num_labels and data.task == "classification" \
            and data.partition.labels_per_client > data.num_labels:
        problems.append(("data.partition.labels_per_client",
                         f"{data.partition.labels_per_client} exceeds num_labels={data.num_labels}"))

    metric = cfg.evaluation.metric
    if metric is not None and metric in SCORE_METRICS:
        kind = SCORE_METRICS[metric].task
        if kind != "any" and kind != data.task:
            problems.append(("evaluation.metric", f"{metric!r} is a {kind} metric but data.task is {data.task!r}"))
    for p in cfg.metrics.fairness_percentiles:
        if not 0 <= p <= 100:
            problems.append(("metrics.fairness_percentiles", f"{p} is not a percentile in [0, 100]"))
    if cfg.evaluation.target is not None and not math.isfinite(cfg.evaluation.target):
        problems.append(("evaluation.target", "must be a finite number"))
    if cfg.engine.backend == "surrogate":
        sur = cfg.engine.surrogate
        if not sur.calibration:
            problems.append(("engine.surrogate.calibration", "required for engine.backend: surrogate (a "
                             "surrogate.json written by `fedranklite calibrate <results dir of a real run>`)"))
        elif not (Path(sur.calibration).is_file() or (Path(sur.calibration) / "surrogate.json").is_file()):
            problems.append(("engine.surrogate.calibration", f"not found: {sur.calibration} (make it with "
                             f"`fedranklite calibrate <results dir of a real run>`)"))
    return problems


def validate(tree: dict, sources: Optional[dict[str, str]] = None, origin: str = "<config>") -> Config:
    sources = sources or {}
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_format_pydantic(exc, sources, origin))) from None
    problems = semantic_problems(cfg)
    if problems:
        lines = [f"{_source_of(key, sources, origin)}: {key}: {msg}" for key, msg in problems]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return cfg


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Load a YAML experiment file (with its `_base_` chain) and `--set` overrides into a Config."""
    sources: dict[str, str] = {}
    path = Path(path)
    tree = _load_tree(path, (), sources)
    tree = apply_overrides(tree, list(overrides or []), sources)
    return validate(tree, sources, origin=str(path.resolve()))


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
