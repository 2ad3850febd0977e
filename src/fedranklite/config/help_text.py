"""The help text of each configuration key and plugin, for the generated reference and `fedranklite list`.

A key's help is its field's `description` when it has one, else the comments written next to the field in the
source (the trailing comment on its line and the comment lines directly above it), else a short fallback table
for keys that share a block comment, else the comment beside the key in configs/base.yaml. A plugin's help is one
line for each shipped plugin, else its config class's (or implementation's) docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from fedranklite.core.registry import Registry

BASE_YAML = Path(__file__).resolve().parents[3] / "configs" / "base.yaml"


# What each plugin section is, in the words a user needs (the registry knows only its kind and key).
SLOT_INTROS: dict[tuple[str, ...], str] = {
    ("federation", "scheduler"): "Assigns every selected client its LoRA rank each round.",
    ("federation", "aggregation"): "Combines the accepted client updates into the new global adapter.",
    ("federation", "server_optimizer"): "What the server does with the aggregate before it becomes the global adapter.",
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


def tidy(text: str) -> str:
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
        return tidy(field.description)
    trailing, above = _source_comments(cls, name)
    if trailing and tidy(trailing):
        return tidy(trailing)
    generic = re.sub(r"^tiers\.[^.]+\.", "tiers.<name>.", key)
    if generic in HELP:
        return HELP[generic]
    text = base_yaml_comments().get(key, "") if key and not key.startswith("tiers.") else ""
    if text and plugin:
        text = re.sub(rf"^{re.escape(plugin)}(?::|,)\s*", "", text)
    return tidy(text) or tidy(above)


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
    ("scheduler", "uniform"): (
        "Every client trains at the largest common rank all selected clients can afford (memory cap; predicted "
        "round time within the deadline when one is set), else r_min; ignores the rank budget (the uniform baseline)."
    ),
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


def own_doc(obj: Any) -> str:
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
        doc = own_doc(klass)
        if doc:
            return doc
    impl = registry.entry(name).impl
    return "" if isinstance(impl, str) else own_doc(impl)
