"""`fedranklite list [KIND]`: every plugin of each kind with its parameters, types and defaults.

Plugins of other installed distributions (entry points, core/registry.py) are listed with the distribution
they come from; a plugin that failed to load is listed with the reason instead of its parameters.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# kind as typed -> (module holding the registry, its name, the config key that names a plugin of the kind)
KINDS: dict[str, tuple[str, str, str]] = {
    "schedulers": ("fedranklite.federation.schedulers", "SCHEDULERS", "federation.scheduler.type"),
    "aggregators": ("fedranklite.federation.aggregation", "AGGREGATORS", "federation.aggregation.type"),
    "server-optimizers": (
        "fedranklite.federation.server_optimizer",
        "SERVER_OPTIMIZERS",
        "federation.server_optimizer.type",
    ),
    "partitioners": ("fedranklite.data.partitioners", "PARTITIONERS", "data.partition.type"),
    "straggler-policies": ("fedranklite.federation.stragglers", "STRAGGLER_POLICIES", "deadline.straggler_policy.type"),
    "timing-modes": ("fedranklite.federation.timing", "TIMING_MODES", "timing.mode"),
    "backends": ("fedranklite.backends", "BACKENDS", "engine.backend"),
    "scores": ("fedranklite.data.scoring", "SCORE_METRICS", "evaluation.metric"),
}


def kind_of(text: str) -> str | None:
    """The kind `text` names: straggler_policies and straggler-policies alike, singular or plural, or the start
    of one kind's name (`timing`, `straggler`, `score`)."""
    key = text.strip().lower().replace("_", "-")
    for kind in KINDS:
        if key in (kind, kind.rstrip("s"), kind.replace("policies", "policy")):
            return kind
    starts = [kind for kind in KINDS if key and kind.startswith(key)]
    return starts[0] if len(starts) == 1 else None


def registry_of(kind: str):
    module, attr, _ = KINDS[kind]
    return getattr(importlib.import_module(module), attr)


def _plain(text: str) -> str:
    """Markdown of the configuration reference as terminal text."""
    return text.replace("`", "").replace(" \\| ", " | ")


def parameter_lines(registry, name: str) -> list[str]:
    from fedranklite.config.help_text import field_help
    from fedranklite.config.reference import allowed, default_of, type_name
    from fedranklite.config.schema import unwrap_model

    config = registry.config_class(name)
    out: list[str] = []

    def add(model: Any, prefix: str) -> None:
        for param, field in model.model_fields.items():
            if param == registry.key and model is config:
                continue
            sub = unwrap_model(field.annotation)
            if sub is not None:
                add(sub, f"{prefix}{param}.")
                continue
            limits = allowed(field)
            text = field_help(model, param)
            out.append(
                f"      {prefix}{param}: {type_name(field.annotation)} = {_plain(default_of(field))}"
                + (f"  ({_plain(limits)})" if limits else "")
                + (f"  {text}" if text else "")
            )

    add(config, "")
    return out


def plugin_lines(kind: str) -> list[str]:
    from fedranklite.config.help_text import plugin_help

    registry = registry_of(kind)
    _, _, key = KINDS[kind]
    lines = [f"{kind} ({key}):"]
    for name in registry:
        origin = registry.origin(name)
        if kind == "scores":
            metric = registry[name]
            better = "higher" if metric.higher_is_better else "lower"
            lines.append(f"  {name}  {metric.task}, {better} is better" + (f"  [{origin}]" if origin else ""))
            continue
        help_text = _plain(plugin_help(registry, name))
        lines.append(f"  {name}" + (f"  [{origin}]" if origin else "") + (f"  {help_text}" if help_text else ""))
        params = parameter_lines(registry, name)
        lines += params or ["      (no parameters)"]
    for name, why in registry.broken.items():
        lines.append(f"  {name}  NOT LOADED: {why}")
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind is None:
        kinds = list(KINDS)
    else:
        kind = kind_of(args.kind)
        if kind is None:
            print(f"error: unknown kind {args.kind!r}; choose one of {', '.join(KINDS)}", file=sys.stderr)
            return 2
        kinds = [kind]
    blocks = ["\n".join(plugin_lines(kind)) for kind in kinds]
    print("\n\n".join(blocks))
    return 0
