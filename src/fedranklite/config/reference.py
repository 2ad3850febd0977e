"""The configuration reference, generated from the schema and the plugin registries.

Every key of every section with its type, default, allowed values and help text, and every plugin of every
plugin section (schedulers, aggregators, partitioners, straggler policies, timing modes, backends) with its
own parameters. The help text is the field's `description` when it has one, else the comments written next
to the field in the source: the trailing comment on its line and the comment lines directly above it.

    python -m fedranklite.config.reference                 # print the page (Markdown)
    python -m fedranklite.config.reference --out FILE      # write it
    python -m fedranklite.config.reference --check FILE    # exit 1 when FILE differs from the generated page

`docs/reference/configuration.md` is this page; `tests/test_docs.py` fails when the two differ.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedranklite.config.files import ALIASES, FILE_PATH_KEYS, SWITCHES
from fedranklite.config.schema import PLUGIN_SLOTS, Config, unwrap_model
from fedranklite.core.registry import PluginConfig, PluginSlot, Registry

PAGE_TITLE = "Configuration reference"
BASE_YAML = Path(__file__).resolve().parents[3] / "configs" / "base.yaml"

# What each plugin section is, in the words a user needs (the registry knows only its kind and key).
SLOT_INTROS: dict[tuple[str, ...], str] = {
    ("federation", "scheduler"): "Assigns every selected client its LoRA rank each round.",
    ("federation", "aggregation"): "Combines the accepted client updates into the new global adapter.",
    ("data", "partition"): "Splits the training rows among the clients.",
    ("deadline", "straggler_policy"): "What happens to a client that cannot finish before the round's deadline.",
    ("timing",): "How a client's simulated compute time is priced.",
    ("engine",): "Where client training runs.",
}


# ------------------------------------------------------------------------------------------ help text
@functools.lru_cache(maxsize=None)
def _comments(path: str) -> tuple[dict[int, str], set[int]]:
    """line -> comment text of a source file, and the lines that hold nothing but a comment."""
    text = Path(path).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            for line in range(tok.start[0], tok.end[0] + 1):
                code_lines.add(line)
    alone = {line for line in comments if line not in code_lines}
    return comments, alone


@functools.lru_cache(maxsize=None)
def _class_field_lines(cls: type) -> dict[str, int]:
    """Field name -> the line of its annotated assignment in `cls`'s own body."""
    try:
        path = inspect.getsourcefile(cls)
        lines, start = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node.lineno + start - 1
    return out if path else {}


def _own_source(cls: type, name: str) -> Optional[type]:
    """The class in `cls`'s MRO whose own body defines field `name` (registered plugin classes are
    subclasses made by the registry, without a source of their own)."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}) and name in _class_field_lines(klass):
            return klass
    return None


def _source_comments(cls: type[BaseModel], name: str) -> tuple[str, str]:
    """The comment on a field's line in its class's source, and the comment lines directly above it."""
    owner = _own_source(cls, name)
    if owner is None:
        return "", ""
    path = inspect.getsourcefile(owner)
    line = _class_field_lines(owner)[name]
    comments, alone = _comments(path)
    above = []
    prev = line - 1
    while prev in alone:
        above.insert(0, comments[prev])
        prev -= 1
    trailing = comments[line] if line in comments and line not in alone else ""
    return trailing, " ".join(above)


# code references that mean something to a developer only: "(hardware.py)", "; validation.clip_update"
_CODE_REFS = (
    re.compile(r"\s*\([^()]*\b[\w/]+\.py\)"),
    re.compile(r"\s*\((?:[\w/]+\.py[,;]?\s*)+(?=[^)]*\))"),
    re.compile(r";\s*[a-z_]+\.[a-z_]+$"),
    re.compile(r"\s*\((?:viability|module docstring)[^)]*\)"),
    re.compile(r"^load_config:\s*"),
    re.compile(r"^[\w/]+\.py$"),
    re.compile(r"\s*\((?:see )?README[^)]*\)"),
    re.compile(r"\s*README \"[^\"]*\""),
)


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    for pattern in _CODE_REFS:
        text = pattern.sub("", text)
    return text.replace("None:", "null:").strip()


@functools.lru_cache(maxsize=None)
def base_yaml_comments(path: str = str(BASE_YAML)) -> dict[str, str]:
    """Dotted key -> the comment written beside it in configs/base.yaml (with its continuation lines), for
    the keys written there and for the keys shown commented out (`# rank: null  # fixed: ...`)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    key_line = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(.*)$")
    shown_key = re.compile(r"^(\s*)#( *)([A-Za-z_][\w-]*):(?:\s+\S[^#]*?)?\s+#(.*)$")
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: Optional[str] = None
    comment_col = -1
    for line in lines:
        found = key_line.match(line)
        shown = None if found else shown_key.match(line)
        if found or shown:
            if found:
                indent, key, rest = len(found.group(1)), found.group(2), found.group(3)
                hash_at = rest.find(" #")
                comment = rest[hash_at + 2 :].strip() if hash_at >= 0 else ""
                col = len(line) - len(rest) + hash_at + 1 if hash_at >= 0 else -1
            else:
                indent = len(shown.group(1)) + max(len(shown.group(2)) - 1, 0)
                key, comment = shown.group(3), shown.group(4).strip()
                col = line.rfind("#")
            while stack and stack[-1][0] >= indent:
                stack.pop()
            dotted = ".".join([k for _, k in stack] + [key])
            stack.append((indent, key))
            out[dotted] = comment
            last, comment_col = dotted, col
            continue
        stripped = line.lstrip()
        if last is not None and stripped.startswith("#") and len(line) - len(stripped) == comment_col:
            out[last] = f"{out[last]} {stripped.lstrip('#').strip()}".strip()
            continue
        last, comment_col = None, -1
    return out


def field_help(cls: type[BaseModel], name: str, key: str = "", plugin: str = "") -> str:
    """A field's help: its description, else the comment on its line in the source, else `HELP[key]`, else
    configs/base.yaml's comment on `key`, else the comment lines above the field in the source. `plugin`: a
    leading "<plugin>:" in base.yaml's comment is dropped (the table is that plugin's already)."""
    field = cls.model_fields[name]
    if field.description:
        return _tidy(field.description)
    trailing, above = _source_comments(cls, name)
    if trailing and _tidy(trailing):
        return _tidy(trailing)
    generic = re.sub(r"^tiers\.[^.]+\.", "tiers.<name>.", key)
    if generic in HELP:
        return HELP[generic]
    text = base_yaml_comments().get(key, "") if key and not key.startswith("tiers.") else ""
    if text and plugin:
        text = re.sub(rf"^{re.escape(plugin)}(?::|,)\s*", "", text)
    return _tidy(text) or _tidy(above)


# Help for the keys without a comment on their own line in the source (a comment shared by a block of keys, or
# none). A field's `description` or its own comment in the source takes precedence over this.
HELP: dict[str, str] = {
    "seed": "Seeds every random draw of a run: data split, client selection, hidden client speeds, initial adapter.",
    "output_dir": "Results go to output_dir/experiment_name/.",
    "model.max_length": "Tokens per row (batches are padded to their longest row).",
    "model.head_dropout": "Dropout before the task head.",
    "model.lora.alpha": "LoRA scale: updates are scaled by alpha / r_max whatever a client's active rank.",
    "model.lora.dropout": "LoRA dropout.",
    "model.lora.target_modules": (
        "The backbone's linear layers that carry LoRA, by name (e.g. [query, value] for BERT-style encoders, "
        "[q_proj, v_proj] for Llama-style causal LMs)."
    ),
    "federation.num_rounds": "Rounds of the run.",
    "federation.clients_per_round": (
        "Clients selected each round (a seeded draw; all of them when equal to their number)."
    ),
    "federation.clip_update_norm_ratio": (
        "Clip every accepted update's distance from the global adapter to this x the round's median distance "
        "before aggregation; null: off."
    ),
    "federation.clip_update_norm": (
        "Clip every accepted update's distance from the global adapter to this absolute L2 norm before "
        "aggregation; null: off."
    ),
    "training.local_epochs": "Passes over a client's rows per round (cut short by max_local_steps).",
    "training.batch_size": "Rows per local training step.",
    "training.lr": "Learning rate of the LoRA factors.",
    "training.weight_decay": "Weight decay of the optimizer.",
    "data.label_column": "The column holding the label.",
    "data.embedded_train_size": "Embedded task: training rows generated.",
    "data.embedded_eval_size": "Embedded task: evaluation rows generated.",
    "tiers.<name>.compute_factor": "Training speed relative to the compute_reference device.",
    "tiers.<name>.num_clients": "Clients of this tier.",
    "tiers.<name>.memory_gb": "Memory of a client of this tier; caps the rank it can train.",
    "tiers.<name>.bandwidth_mbps": (
        "Mbit/s both ways, when uplink_mbps / downlink_mbps are not given; no bandwidth at all: communication "
        "time is not simulated."
    ),
    "tiers.<name>.uplink_mbps": "Client -> server Mbit/s (default: bandwidth_mbps).",
    "tiers.<name>.downlink_mbps": "Server -> client Mbit/s (default: bandwidth_mbps).",
    "tiers.<name>.speed_sigma": (
        "Lognormal sigma of each client's speed around the tier's, drawn once per run; hidden from the schedulers."
    ),
    "tiers.<name>.bandwidth_sigma": (
        "Lognormal sigma of each client's bandwidth around the tier's, drawn once per run; hidden from the schedulers."
    ),
    "tiers.<name>.jitter_sigma": "Lognormal sigma of a client's compute time from round to round.",
    "tiers.<name>.availability": (
        "Probability that a selected client answers in a round (else it is lost for the round)."
    ),
    "evaluation.batch_size": "Rows per evaluation batch.",
    "evaluation.stop_at_target": "End the run at the first evaluation that reaches the target.",
    "metrics.fairness_percentiles": "Percentiles of the per-client loss reported each round.",
    "data.partition.labels_per_client": "Classes each client holds.",
}


# One line for each plugin that ships with the package (a third-party plugin is described by its config class's
# docstring, else its implementation's).
PLUGIN_SUMMARIES: dict[tuple[str, str], str] = {
    ("scheduler", "fixed"): "Every client trains at `rank` (default `r_bar`), capped by what its tier's memory holds.",
    ("scheduler", "cvx"): (
        "Minimises the predicted round time of the slowest client, max_i (a_i + b_i r_i), subject to "
        "sum r_i = budget and per-client bounds, exactly, in integers."
    ),
    ("scheduler", "lite"): (
        "The O(N) rule: score_i = gain_weight * EMA(loss drop_i) + throughput_weight * EMA(throughput_i), times "
        "deadline_penalty after a missed deadline; ranks proportional to the scores, clamped to the bounds, "
        "summing exactly to the budget."
    ),
    ("aggregation", "fedavg"): "Each rank-r update is zero-padded to r_max, then all are averaged with sample weights.",
    ("aggregation", "blockwise"): (
        "Rank slice j is averaged only over the clients whose rank covered j; a slice nobody trained keeps its "
        "global value."
    ),
    ("aggregation", "svd"): (
        "FlexLoRA-style: the sample-weighted average of the clients' products B_k A_k, re-factorized by a "
        "truncated SVD to r_max."
    ),
    ("aggregation", "stack"): (
        "FLoRA-style: stacks the weighted factors (their product is the exact weighted sum of B_k A_k) and "
        "compresses to r_max through QR of the thin stacked factors."
    ),
    ("aggregation", "hetlora"): (
        "HetLoRA-style: zero padding as fedavg, with per-pair weights n_k * sqrt(|A_k|^2 + |B_k|^2)."
    ),
    ("aggregation", "median"): (
        "Coordinate-wise median, per rank slice over the clients that trained it; sample counts ignored."
    ),
    ("aggregation", "trimmed_mean"): (
        "Coordinate-wise mean after cutting the `trim` fraction at each end, per rank slice over the clients that "
        "trained it; sample counts ignored."
    ),
    ("aggregation", "krum"): (
        "(Multi-)Krum: keeps the `keep` updates closest to their neighbours, assuming `f` attackers, and averages "
        "them blockwise."
    ),
    ("straggler policy", "drop"): "A client that cannot finish is stopped at the deadline and its update discarded.",
    ("straggler policy", "wait"): (
        "The round lasts as long as its slowest client; late clients still count as stragglers."
    ),
    ("straggler policy", "use_partial"): (
        "A late client stops before the deadline and contributes the steps that fit, weighted by the samples it "
        "trained."
    ),
    ("timing mode", "profile"): (
        "Compute seconds = samples x t(r) / compute_factor, with t(r) = a + b r from a measured rank sweep of the "
        "backbone; deterministic."
    ),
    ("timing mode", "measured"): (
        "The wall time of local training / compute_factor: real, but it depends on the machine's load."
    ),
    ("timing mode", "analytic"): (
        "samples x (sec_per_sample + sec_per_sample_per_rank x r) / compute_factor, with constants you choose: "
        "for tests and sensitivity sweeps."
    ),
    ("backend", "local"): "Clients train in this process, one after another, with one model resident.",
    ("backend", "flower"): (
        "The same round loop on Flower: simulation (virtual SuperNodes in this process) or deployment "
        "(a SuperLink and SuperNodes as separate processes)."
    ),
    ("backend", "surrogate"): (
        "Client training replaced by models fitted on a short real run (`fedranklite calibrate`): what-if runs "
        "with up to millions of clients."
    ),
}


def _own_doc(obj: Any) -> str:
    """The docstring `obj` defines itself (not one inherited from a base class or made by dataclasses)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if doc and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + "("):
            return ""
    elif callable(obj) and hasattr(obj, "__code__"):
        doc = obj.__doc__
    else:
        return ""
    return " ".join((inspect.cleandoc(doc) if doc else "").split("\n\n")[0].split())


def plugin_help(registry: Registry, name: str) -> str:
    """What a plugin does: the package's summary for a shipped plugin, else its config class's own docstring,
    else its implementation's."""
    if (registry.kind, name) in PLUGIN_SUMMARIES:
        return PLUGIN_SUMMARIES[(registry.kind, name)]
    config = registry.config_class(name)
    for klass in config.__mro__[1:]:
        if klass is registry.base or not issubclass(klass, registry.base):
            break
        doc = _own_doc(klass)
        if doc:
            return doc
    impl = registry.entry(name).impl
    return "" if isinstance(impl, str) else _own_doc(impl)


# ------------------------------------------------------------------------------------------ rendering
def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def type_name(annotation: Any) -> str:
    """A YAML-minded name of a field's type: int, float, text, true/false, list of text, ... ('or null')."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return "choice"
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if _is_optional(annotation) else inner
    if origin is list:
        return f"list of {type_name(args[0]) if args else 'values'}"
    if origin is dict:
        return f"mapping of {type_name(args[1]) if len(args) > 1 else 'values'}"
    if origin is typing.Annotated:
        return type_name(args[0])
    names = {int: "integer", float: "number", str: "text", bool: "true / false"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return str(annotation).replace("typing.", "")


def _literal_values(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _literal_values(arg)
        if found:
            return found
    return []


def yaml_value(value: Any) -> str:
    """A value as it would be written in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # as base.yaml writes it (32, not 32.0); the type column says it is a number
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _bounds(field: Any) -> list[str]:
    out = []
    text = type_name(field.annotation).startswith("text")
    for meta in field.metadata:
        for kind, attr, sign in (
            (annotated_types.Ge, "ge", ">="),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "<="),
            (annotated_types.Lt, "lt", "<"),
        ):
            if isinstance(meta, kind):
                bound = getattr(meta, attr)
                out.append(f"{sign} {f'{bound:,}' if isinstance(bound, int) else yaml_value(bound)}")
        unit = "character" if text else "item"
        if isinstance(meta, annotated_types.MinLen) and meta.min_length:
            out.append(f"at least {meta.min_length} {unit}{'s' if meta.min_length > 1 else ''}")
        if isinstance(meta, annotated_types.MaxLen):
            out.append(f"at most {meta.max_length:,} {unit}s")
    return out


def allowed(field: Any) -> str:
    values = _literal_values(field.annotation)
    parts = [" \\| ".join(f"`{yaml_value(v)}`" for v in values)] if values else []
    parts += _bounds(field)
    return "; ".join(parts)


def default_of(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, PluginConfig):
        return f"`{value.name}`"
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{yaml_value(value)}`"


def _cell(text: str) -> str:
    """Text in a table cell: `|` escaped (inside code spans too, as the tables extension wants)."""
    return text.replace("|", "\\|").replace("\n", " ") if text else ""


# Defaults the schema cannot show as a value: the config loader fills them in from the file.
DEFAULT_SHOWN: dict[str, str] = {"experiment_name": "the config file's name"}


def _row(key: str, field: Any, help_text: str) -> str:
    default = DEFAULT_SHOWN.get(key) or default_of(field)
    return f"| `{key}` | {type_name(field.annotation)} | {default} | {allowed(field)} | {_cell(help_text)} |"


TABLE_HEAD = "| key | type | default | allowed | what it does |\n|---|---|---|---|---|"


def anchor(key: str) -> str:
    """The id of the heading of `key`'s section: dots and brackets become dashes ("tiers.<name>" -> "tiers-name")."""
    out = re.sub(r"[^a-z0-9_]+", "-", key.lower())
    return out.strip("-")


def heading(level: int, text: str, key: str) -> str:
    shown = text.replace("<", "&lt;").replace(">", "&gt;")
    return f"{'#' * level} {shown} {{#{anchor(key)}}}\n"


def _plugin_slot(field: Any) -> Optional[PluginSlot]:
    return next((m for m in field.metadata if isinstance(m, PluginSlot)), None)


def _dict_value_model(annotation: Any) -> Optional[type[BaseModel]]:
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        return value if isinstance(value, type) and issubclass(value, BaseModel) else None
    return None


TIERS_HELP = (
    "Hardware tiers by name; clients are numbered tier by tier, and each tier's figures price its clients' "
    "simulated time and cap their rank by memory."
)


def section_rows(
    model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()
) -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    """Rows of a section's plain keys, and its sub-sections (dotted prefix, model) to document apart."""
    rows, subs = [], []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        help_text = field_help(model, name, key)
        if _plugin_slot(field) is not None:
            help_text = help_text or SLOT_INTROS.get(tuple(key.split(".")), "")
            rows.append(
                f"| `{key}` | plugin | {default_of(field)} | see [{key}](#{anchor(key)}) | {_cell(help_text)} |"
            )
            continue
        if _dict_value_model(field.annotation) is not None:
            subs.append((f"{key}.<name>", _dict_value_model(field.annotation)))
            rows.append(
                f"| `{key}` | mapping of name to section | base.yaml's three tiers | at least one entry | "
                f"{TIERS_HELP} See [{key}.&lt;name&gt;](#{anchor(key + '.<name>')}). |"
            )
            continue
        sub = unwrap_model(field.annotation)
        if sub is not None and typing.get_origin(field.annotation) is not list:
            subs.append((key, sub))
            continue
        rows.append(_row(key, field, help_text))
    return rows, subs


def _sections(model: type[BaseModel], prefix: str, title: str) -> Iterator[str]:
    rows, subs = section_rows(model, prefix)
    doc = _own_doc(model)
    yield heading(2, f"{title}", title)
    if doc:
        yield _tidy(doc) + "\n"
    if rows:
        yield TABLE_HEAD
        yield from rows
        yield ""
    for key, sub in subs:
        yield from _sections(sub, key + ".", key)


def _plugin_sections() -> Iterator[str]:
    for path, slot in PLUGIN_SLOTS.items():
        registry = slot.registry
        key = ".".join(path)
        names = builtin_names(registry)
        yield heading(2, key, key)
        listed = ", ".join(f"`{n}`" for n in names)
        yield (
            f"{SLOT_INTROS.get(path, '')} `{key}.{registry.key}` picks the {registry.kind}: one of {listed} "
            f"(default `{slot.default}`). The section's other keys are that {registry.kind}'s parameters; a key "
            f"it does not take is an error naming it. Without parameters, a bare name will do "
            f"(`{key}: {slot.default}`).\n"
        )
        shared = list(registry.base.model_fields)
        if shared:
            yield f"Every {registry.kind} takes:\n"
            yield TABLE_HEAD
            for name in shared:
                field = registry.base.model_fields[name]
                yield _row(f"{key}.{name}", field, field_help(registry.base, name, f"{key}.{name}"))
            yield ""
        for name in names:
            config = registry.config_class(name)
            yield heading(3, f"{key}: {name}", f"{key}.{name}")
            text = plugin_help(registry, name)
            if text:
                yield text + "\n"
            rows: list[str] = []
            nested: list[tuple[str, type[BaseModel]]] = []
            for param in config.model_fields:
                if param in shared or param == registry.key:
                    continue
                field = config.model_fields[param]
                sub = unwrap_model(field.annotation)
                if sub is not None:
                    nested.append((f"{key}.{param}", sub))
                else:
                    rows.append(_row(f"{key}.{param}", field, field_help(config, param, f"{key}.{param}", name)))
            if not rows and not nested:
                yield f"No parameters of its own: `{key}: {{{registry.key}: {name}}}`.\n"
            if rows:
                yield TABLE_HEAD
                yield from rows
                yield ""
            for prefix, sub in nested:
                yield f"Its parameters, under `{prefix}`:\n"
                sub_rows, _ = section_rows(sub, prefix + ".")
                yield TABLE_HEAD
                yield from sub_rows
                yield ""


def builtin_names(registry: Registry) -> list[str]:
    """The plugins that ship with the package, in registration order (third-party plugins, loaded from entry
    points or registered by a user's own code, are left out: the page describes the package)."""
    return [n for n in registry if _is_builtin(registry, n)]


def _is_builtin(registry: Registry, name: str) -> bool:
    entry = registry.entry(name)
    impl = entry.impl
    module = impl.partition(":")[0] if isinstance(impl, str) else getattr(impl, "__module__", "")
    return module.startswith("fedranklite.") and entry.config.__module__.startswith("fedranklite.")


def _aliases() -> Iterator[str]:
    yield "## Other names accepted\n"
    yield (
        "The seed document's names for some keys are read as the names above, in files, in `_base_` chains and "
        "in `--set`; a run's `config.yaml` records the names above.\n"
    )
    yield "| written | read as |\n|---|---|"
    for alias, canonical in ALIASES.items():
        yield f"| `{'.'.join(alias)}` | `{'.'.join(canonical)}` |"
    for key, meaning in SWITCHES.items():
        yield f"| `{'.'.join(key)}` | {_cell(meaning)} |"
    yield ""


def _paths() -> Iterator[str]:
    keys = ", ".join(f"`{'.'.join(k)}`" for k in FILE_PATH_KEYS)
    yield "## Paths\n"
    yield (
        f"A relative path in a config file is read from that file's folder for {keys} (and `_base_`); given "
        "with `--set`, from the current directory. Every other path is read from the current directory.\n"
    )


def generate() -> str:
    """The whole page, as Markdown."""
    parts = [
        f"# {PAGE_TITLE}\n",
        "Generated from the configuration schema and the plugin registries by "
        "`python -m fedranklite.config.reference`; do not edit by hand. Every default here is "
        "`configs/base.yaml`'s, and a key a config leaves out takes it. Unknown keys, wrong types and values "
        "outside the allowed range are refused before any model or data loads, naming the file and the key. "
        "How configs inherit and override each other: [Configuration](../configuration.md).\n",
    ]
    plain_skip = {p[0] for p in PLUGIN_SLOTS if len(p) == 1}
    rows, subs = section_rows(Config, "", skip=tuple(plain_skip))
    parts += ["## Top level\n", TABLE_HEAD, *rows, ""]
    for key, sub in subs:
        parts += list(_sections(sub, key + ".", key))
    parts += list(_plugin_sections())
    parts += list(_aliases())
    parts += list(_paths())
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedranklite.config.reference",
        description="Print the configuration reference (Markdown), generated from the schema and the plugins.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", metavar="FILE", help="write the page to FILE instead of printing it")
    group.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the generated page")
    args = parser.parse_args(argv)
    page = generate()
    if args.check:
        path = Path(args.check)
        if not path.is_file():
            print(f"error: {path}: no such file; write it with --out {path}", file=sys.stderr)
            return 2
        if path.read_text(encoding="utf-8") != page:
            print(f"{path} is out of date: regenerate it with --out {path}", file=sys.stderr)
            return 1
        return 0
    if args.out:
        try:
            Path(args.out).write_text(page, encoding="utf-8")
        except OSError as exc:
            print(f"error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
