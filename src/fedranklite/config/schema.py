"""The experiment configuration's schema: typed, frozen sections, the plugin sections, and the checks that
span sections. Reading YAML files into it (inheritance, merge, overrides, error messages) is files.py; a
hardware tier (its device, speed and network) is tiers.py.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, field_validator

from fedranklite.backends import BACKENDS
from fedranklite.config.tiers import MAX_CLIENTS, TierConfig, tier_problems
from fedranklite.core.registry import PluginSlot, Section
from fedranklite.data.embedded import EMBEDDED_TASKS
from fedranklite.data.glue import GLUE_TASKS
from fedranklite.data.load import FILE_TYPES
from fedranklite.data.partitioners import PARTITIONERS
from fedranklite.data.scoring import SCORE_METRICS, binary_f1_problem
from fedranklite.data.textsplit import MAX_CLASSES
from fedranklite.federation.aggregation import AGGREGATORS
from fedranklite.federation.hardware import TraceError, read_trace
from fedranklite.federation.schedulers import SCHEDULERS
from fedranklite.federation.server_optimizer import SERVER_OPTIMIZERS
from fedranklite.federation.stragglers import STRAGGLER_POLICIES
from fedranklite.federation.timing import TIMING_MODES
from fedranklite.model.verbalizer import VerbalizerError, check_template, template_fields


class ConfigError(ValueError):
    """A configuration that cannot run. The message names the file and the dotted key."""


def _relative_hint(value: str) -> str:
    """Why a relative path was not found: paths in a config file are made relative to the file's folder when
    it loads (configfile.py), so a path still relative here came from --set (or a tree built in code)."""
    if Path(value).expanduser().is_absolute():
        return ""
    return f" (a relative path given with --set is read from the current directory, {Path.cwd()})"


NAME_MAX = 100
# Upper bounds that stop a typo (1e9 clients, a 1e6 rank) before anything is allocated; each is far above
# what the project has run (100k surrogate clients, rank 64, 512-token models). The model-dependent limits
# (max_length, r_max against the backbone) are checked in preflight.py before the model loads.
MAX_ROUNDS = 1_000_000
MAX_ROWS = 10_000_000
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most samplers take 32-bit seeds
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d{1,3})?"


def unsafe_name(name: str) -> Optional[str]:
    """Why `name` is not one safe folder name (None when it is): no separators, no `..` or leading dot, no
    absolute path, not empty, no control characters, at most NAME_MAX characters."""
    if not name or not name.strip():
        return "is empty"
    if len(name) > NAME_MAX:
        return f"has {len(name)} characters (at most {NAME_MAX})"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if name.startswith("."):
        return "starts with a dot"
    if name != name.strip():
        return "starts or ends with a space"
    if Path(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    return None


# --------------------------------------------------------------------------------------------------
# Schema. Its defaults are configs/base.yaml's (tests/test_defaults.py fails when they disagree): a config
# that inherits base.yaml and one built in code without a key mean the same. `extra="forbid"` turns unknown
# keys into errors; `frozen=True` keeps a run's config fixed.
# Plugin sections (scheduler, aggregation, partition, straggler policy, timing, engine) are validated by
# the chosen plugin's own config class, which lives next to its implementation (registry.py).
# --------------------------------------------------------------------------------------------------
_Section = Section


class LoraConfig(_Section):
    r_max: int = Field(16, ge=1, le=65_536)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)


class VerbalizerConfig(_Section):
    """Label-word scoring of a causal LM (verbalizer.py). Null values come from the task: the GLUE task table
    (glue.py), else a generic template and the label names as words."""

    # {text_a} (first text column) and {text_b} (second, for pairs); a literal brace is {{ or }}
    template: Optional[str] = Field(None, min_length=1, max_length=10_000)
    label_words: Optional[list[str]] = Field(None, min_length=1, max_length=MAX_CLASSES)  # one per class id
    label_values: Optional[list[float]] = Field(None, min_length=1, max_length=MAX_CLASSES)  # regression
    # regression read-out's training loss: mse of the expected value, or soft_ce (cross-entropy against the
    # target split between the two nearest label values; the prediction stays the expected value)
    regression_loss: Literal["mse", "soft_ce"] = "mse"

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, template: Optional[str]) -> Optional[str]:
        if template is not None:
            try:
                template_fields(template)
            except VerbalizerError as exc:  # the key is named by the caller
                raise ValueError(str(exc).removeprefix("model.verbalizer.template: ")) from None
        return template

    @field_validator("label_values")
    @classmethod
    def _moderate_values(cls, values: Optional[list[float]]) -> Optional[list[float]]:
        if values is not None and any(abs(v) > 1e6 for v in values):
            raise ValueError("label values must lie within +-1e6 (they are averaged in float32)")
        return values

    @field_validator("label_words")
    @classmethod
    def _distinct_words(cls, words: Optional[list[str]]) -> Optional[list[str]]:
        # an empty word is refused for every list of text (registry.Section)
        if words is not None and len(set(words)) < len(words):
            raise ValueError(f"label words repeat: {words}")
        return words


class ModelConfig(_Section):
    name: str = "bundled:minilm-l6"
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    cache_dir: Optional[str] = None  # converted GGUF checkpoints (default $FEDRANKLITE_CACHE or ~/.cache/fedranklite)
    max_length: int = Field(64, ge=4, le=1_048_576)
    # sentence pairs: one sequence (cross) or each text apart (siamese, sentence-transformers' bi-encoder way)
    pair_encoding: Literal["auto", "cross", "siamese"] = "auto"
    head_dropout: float = Field(0.1, ge=0, lt=1)
    # auto: label-word scoring (verbalizer) for causal LMs, a linear head on the pooled embedding otherwise
    head: Literal["auto", "linear", "verbalizer"] = "auto"
    verbalizer: VerbalizerConfig = VerbalizerConfig()
    lora: LoraConfig = LoraConfig()


class FederationConfig(_Section):
    num_clients: Optional[int] = Field(None, ge=1, le=MAX_CLIENTS)  # must equal the sum of tier counts when given
    num_rounds: int = Field(12, ge=1, le=MAX_ROUNDS)
    clients_per_round: int = Field(10, ge=1, le=MAX_CLIENTS)
    aggregation: AGGREGATORS.field("fedavg") = Field("fedavg", validate_default=True)
    # what the server does with the aggregate: none (take it as the new global adapter), momentum (FedAvgM) or
    # adam (FedAdam), which treat aggregate - previous global as a pseudo-gradient (server_optimizer.py)
    server_optimizer: SERVER_OPTIMIZERS.field("none") = Field("none", validate_default=True)
    scheduler: SCHEDULERS.field("lite") = Field("lite", validate_default=True)
    # client updates further than this many times the round's median from the global adapter are
    # rejected (null: no norm check; NaN/Inf and wrong shapes are always rejected)
    max_update_norm_ratio: Optional[float] = Field(10.0, gt=1)
    # clip every accepted update's distance from the global adapter to this x the round's median distance
    # and/or to this absolute L2 norm before aggregation (null: no clipping); validation.clip_update
    clip_update_norm_ratio: Optional[float] = Field(None, ge=1)
    clip_update_norm: Optional[float] = Field(None, gt=0)
    # a CSV / JSON-lines file with one row per client: cid, compute_factor, uplink_mbps, downlink_mbps,
    # availability (hardware.py; a relative path is read from the config file's folder, with --set from the
    # current directory)
    client_trace: Optional[str] = None
    telemetry_ema: float = Field(0.5, gt=0, le=1)  # weight of a client's newest report in the server's estimate
    # stop (exit 3) after this many rounds in a row in which updates were rejected and none aggregated
    # (viability.stop_message): such a run cannot learn, and its "final score" would be the untrained
    # model's; null: never
    stop_after_empty_rounds: Optional[int] = Field(3, ge=1)


class TrainingConfig(_Section):
    local_epochs: int = Field(1, ge=1)
    max_local_steps: Optional[int] = Field(4, ge=1)  # null: every local epoch in full
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    # learning rate of the task head (null: lr). A new head on frozen features needs far larger steps than
    # the LoRA factors to move within the few dozen steps of a laptop budget
    head_lr: Optional[float] = Field(1e-2, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    # rows scored before/after local training for the loss drop; 0 (default): the first and last training
    # batches' losses, which cost nothing (a probe of 32 rows cost 8 % of client throughput)
    probe_samples: int = Field(0, ge=0)
    # FedProx (Li et al. 2020): mu / 2 * ||w - w_global||^2 over the trained parameters (LoRA factors and
    # head) added to every local step's loss, w_global being the adapter received that round; pulls each
    # client back towards the global adapter (client drift under non-IID data). 0: off
    proximal_mu: float = Field(0.0, ge=0)
    # logit-adjusted local training against label skew (Menon et al. 2021, per client): each
    # client's loss sees logits + tau * log(its own label frequencies), so a client holding mostly one class
    # need not push that class's logit up; the model sent and evaluated is not offset
    # (federation/logit_adjustment.py). Classification only. 0: off
    logit_adjustment: float = Field(0.0, ge=0, le=10)
    # FedBABU (Oh et al. 2022): the task head stays at its initialisation on every client (only the LoRA
    # factors train and are averaged), so it cannot drift towards a client's classes. false: the head trains
    freeze_head: bool = False


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
    num_labels: Optional[int] = Field(None, ge=1, le=MAX_CLASSES)  # inferred from the training labels when absent
    label_names: Optional[list[str]] = None  # string labels, mapped to their index
    embedded_train_size: int = Field(3000, ge=10, le=MAX_ROWS)
    embedded_eval_size: int = Field(400, ge=10, le=MAX_ROWS)
    samples_per_client: Optional[int] = Field(None, ge=1)  # cap on each client's training rows
    partition: PARTITIONERS.field("iid") = Field("iid", validate_default=True)  # partitioners.py

    def problems(self) -> list[tuple[str, str]]:
        """Checks across the fields of this section, with the files it names."""
        problems: list[tuple[str, str]] = []

        def unknown(key: str, value: str, known) -> None:
            close = difflib.get_close_matches(value, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append((key, f"unknown name {value!r}{hint}; choose one of {sorted(known)}"))

        if self.source == "embedded" and self.name not in EMBEDDED_TASKS:
            unknown("data.name", self.name, EMBEDDED_TASKS)
        if self.source == "glue":
            if self.name not in GLUE_TASKS:
                unknown("data.name", self.name, GLUE_TASKS)
            elif self.task != GLUE_TASKS[self.name].task:
                problems.append(
                    (
                        "data.task",
                        f"GLUE {self.name} is a {GLUE_TASKS[self.name].task} task "
                        f"(inherit its defaults with _base_: [..., 'glue:{self.name}'])",
                    )
                )
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            problems.append(("data.data_dir", f"not a folder: {self.data_dir}{_relative_hint(self.data_dir)}"))
        if self.source == "files" and not self.train_file:
            problems.append(("data.train_file", "required when data.source is 'files'"))
        for key in ("train_file", "eval_file"):
            value = getattr(self, key)
            if self.source != "files" or not value:
                continue
            if not Path(value).is_file():
                problems.append((f"data.{key}", f"file not found: {value}{_relative_hint(value)}"))
            elif Path(value).suffix.lower() not in FILE_TYPES:
                problems.append(
                    (
                        f"data.{key}",
                        f"unsupported file type {Path(value).suffix!r} of {value}; use one of {sorted(FILE_TYPES)}",
                    )
                )
        if self.task == "regression" and self.num_labels not in (None, 1):
            problems.append(("data.num_labels", "regression uses a single output (num_labels 1)"))
        if self.task == "classification" and self.num_labels == 1:
            problems.append(("data.num_labels", "classification needs at least 2 labels"))
        if self.label_names is not None and self.task == "classification":
            if len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
                problems.append(("data.label_names", f"need at least 2 distinct names, got {self.label_names}"))
            elif self.num_labels is not None and self.num_labels != len(self.label_names):
                problems.append(
                    ("data.label_names", f"{len(self.label_names)} names but data.num_labels={self.num_labels}")
                )
        if self.source == "embedded" and self.task != "classification":
            problems.append(("data.task", f"the embedded task {self.name!r} is a classification task"))
        return problems


class DeadlineConfig(_Section):
    seconds: Optional[float] = Field(None, gt=0)  # None: no deadline
    straggler_policy: STRAGGLER_POLICIES.field("wait") = Field("wait", validate_default=True)


class EvaluationConfig(_Section):
    eval_every: int = Field(1, ge=1)
    max_samples: Optional[int] = Field(400, ge=1)  # a seeded sample of the evaluation rows; null: all
    batch_size: int = Field(64, ge=1)
    metric: Optional[str] = None  # default: accuracy (classification), pearson (regression)
    target: Optional[float] = 0.9  # the score time-to-target is measured to (null: none)
    stop_at_target: bool = False
    # evaluate the global model once before round 1 (metrics.json: initial_eval): a verbalizer's zero-shot
    # score, or a fresh head's chance level, next to what training added
    eval_initial: bool = False

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in SCORE_METRICS:
            close = difflib.get_close_matches(value, list(SCORE_METRICS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown name {value!r}{hint}; choose one of {sorted(SCORE_METRICS)}")
        return value


class MetricsConfig(_Section):
    fairness_percentiles: list[float] = Field(default_factory=lambda: [10.0, 50.0, 90.0], min_length=1)
    checkpoint: bool = True  # atomic checkpoint after every round (what `--resume` continues from)
    tracking: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # off by default
    # per-client fields of a round record: a list of dicts (full) or one list per field (columns: compact,
    # for thousands of clients per round; `ranks` and per-client maps are then left out of metrics.json)
    client_records: Literal["full", "columns"] = "full"
    summary_every: int = Field(1, ge=1)  # rewrite metrics.json every k rounds (and after the last)

    @field_validator("fairness_percentiles")
    @classmethod
    def _percentiles(cls, values: list[float]) -> list[float]:
        bad = [p for p in values if not 0 <= p <= 100]
        if bad:
            raise ValueError(f"{bad[0]} is not a percentile in [0, 100]")
        return values


class Config(_Section):
    experiment_name: str = "default"  # load_config: the experiment file's name unless the config names one
    seed: int = Field(0, ge=0, le=MAX_SEED)
    output_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (whether the machine has it: preflight.py)
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    tiers: dict[str, TierConfig] = Field(default_factory=dict, validate_default=True)

    @field_validator("experiment_name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        problem = unsafe_name(name)
        if problem:
            raise ValueError(f"{problem}; the results go to output_dir/experiment_name, so it must be one folder name")
        return name

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, name):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return name

    @field_validator("tiers")
    @classmethod
    def _some_tier(cls, tiers: dict[str, TierConfig]) -> dict[str, TierConfig]:
        if not tiers:
            raise ValueError("at least one hardware tier is needed")
        return tiers

    deadline: DeadlineConfig = DeadlineConfig()
    timing: TIMING_MODES.field("profile") = Field("profile", validate_default=True)
    evaluation: EvaluationConfig = EvaluationConfig()
    metrics: MetricsConfig = MetricsConfig()
    engine: BACKENDS.field("local") = Field("local", validate_default=True)

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


def semantic_problems(cfg: Config) -> list[tuple[str, str]]:
    """Checks that span sections; each plugin adds its own through `PluginConfig.problems(cfg)`.
    Returns (dotted key, message) pairs."""
    problems: list[tuple[str, str]] = []
    for path in PLUGIN_SLOTS:
        section: Any = cfg
        for part in path:
            section = getattr(section, part)
        prefix = ".".join(path)
        problems += [(f"{prefix}.{key}", msg) for key, msg in section.problems(cfg)]
    problems += cfg.data.problems()
    problems += tier_problems(cfg.tiers)

    classes = cfg.data.num_labels or (len(cfg.data.label_names) if cfg.data.label_names else None)
    f1 = binary_f1_problem(cfg.evaluation.metric, classes)
    if f1:
        problems.append(("evaluation.metric", f1))
    n = cfg.num_clients
    if n > MAX_CLIENTS:
        problems.append(("tiers", f"{n:,} clients in all; at most {MAX_CLIENTS:,}"))
    if cfg.federation.num_clients is not None and cfg.tiers and cfg.federation.num_clients != n:
        problems.append(
            ("federation.num_clients", f"{cfg.federation.num_clients} differs from the tiers' total of {n} clients")
        )
    if cfg.tiers and cfg.federation.clients_per_round > n:
        problems.append(
            (
                "federation.clients_per_round",
                f"{cfg.federation.clients_per_round} is more than the {n} clients in the tiers",
            )
        )
    if cfg.federation.client_trace:
        try:
            read_trace(cfg.federation.client_trace, n)
        except TraceError as exc:
            problems.append(("federation.client_trace", str(exc)))
    problems += _verbalizer_problems(cfg)
    if cfg.training.logit_adjustment > 0:
        if cfg.data.task == "regression":
            problems.append(("training.logit_adjustment", "needs a classification task (data.task is regression)"))
        if cfg.engine.backend == "surrogate":
            problems.append(("training.logit_adjustment", "the surrogate backend does not model it (use 0)"))
    if cfg.training.freeze_head and cfg.engine.backend == "surrogate":
        problems.append(("training.freeze_head", "the surrogate backend does not model it (use false)"))
    metric = cfg.evaluation.metric
    if metric is not None and metric in SCORE_METRICS:
        kind = SCORE_METRICS[metric].task
        if kind != "any" and kind != cfg.data.task:
            problems.append(("evaluation.metric", f"{metric!r} is a {kind} metric but data.task is {cfg.data.task!r}"))
    return problems


def _verbalizer_problems(cfg: Config) -> list[tuple[str, str]]:
    """What the verbalizer section says against the data section (the model-dependent checks, label words'
    tokens, run when the model loads)."""
    v, d, out = cfg.model.verbalizer, cfg.data, []
    if v.template is not None:
        try:
            check_template(v.template, len(d.text_columns))
        except VerbalizerError as exc:
            out.append(("model.verbalizer.template", str(exc).removeprefix("model.verbalizer.template").lstrip(": ")))
    regression = d.task == "regression"
    if (
        regression
        and v.label_words is not None
        and (v.label_values is None or len(v.label_values) != len(v.label_words))
    ):
        out.append(("model.verbalizer.label_values", "regression needs one value per label word"))
    if regression and v.label_values is not None and v.label_words is None:
        out.append(("model.verbalizer.label_values", "regression needs model.verbalizer.label_words with the values"))
    if not regression and v.label_values is not None:
        out.append(
            ("model.verbalizer.label_values", "only regression reads label values (data.task is classification)")
        )
    if not regression and v.regression_loss != "mse":
        out.append(
            ("model.verbalizer.regression_loss", "only regression has a regression loss (data.task is classification)")
        )
    if v.regression_loss == "soft_ce" and v.label_values is not None and len(set(v.label_values)) < len(v.label_values):
        out.append(("model.verbalizer.regression_loss", "soft_ce needs label_values that differ from each other"))
    classes = d.num_labels or (len(d.label_names) if d.label_names else None)
    if not regression and v.label_words is not None and classes is not None and len(v.label_words) != classes:
        out.append(("model.verbalizer.label_words", f"{len(v.label_words)} words for {classes} classes"))
    return out


def _plugin_slots(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], PluginSlot]:
    """Dotted paths of every plugin section in the schema."""
    slots = {}
    for name, field in model.model_fields.items():
        slot = next((m for m in field.metadata if isinstance(m, PluginSlot)), None)
        if slot is not None:
            slots[(*prefix, name)] = slot
            continue
        sub = unwrap_model(field.annotation)
        if (
            sub is not None
            and not field.annotation.__class__.__name__.startswith("dict")
            and typing.get_origin(field.annotation) is not dict
        ):
            slots.update(_plugin_slots(sub, (*prefix, name)))
    return slots


def unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = unwrap_model(arg)
        if found is not None:
            return found
    return None


PLUGIN_SLOTS = _plugin_slots(Config)
