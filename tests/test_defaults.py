"""One source of defaults: configs/base.yaml holds every default of the schema, with the code's value.

The test walks the pydantic schema (config.py and every plugin's config class). A field missing from
base.yaml, or a value that differs from the code's default, fails it. Plugin sections hold the default
plugin's parameters; the other plugins (and their parameters) must be named in base.yaml's comments, as
must every choice of a fixed set (Literal fields).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from fedranklite.config.files import ALIASES, SWITCHES, load_config
from fedranklite.config.schema import Config, TierConfig, unwrap_model
from fedranklite.core.registry import PluginSlot

BASE = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
TEXT = BASE.read_text()
WORDS = set(re.findall(r"[A-Za-z0-9_.\-]+", TEXT))
TREE = yaml.safe_load(TEXT)

# fields whose base.yaml value means something other than the code default, on purpose
SPECIAL = {
    # null in a file: the experiment file's name (load_config); the schema needs a string
    "experiment_name": (None, "default"),
}


def mentioned(word: str) -> bool:
    return word in WORDS or any(w.strip(".") == word for w in WORDS)


def literal_choices(annotation: Any) -> list[str]:
    """The choices of a Literal field (also inside Optional / list)."""
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return [c for arg in typing.get_args(annotation) for c in literal_choices(arg)]


def walk(model: type, node: dict, path: tuple[str, ...], problems: list[str]) -> None:
    for name, field in model.model_fields.items():
        dotted = ".".join((*path, name))
        if getattr(model, "plugin_key", None) == name:
            continue  # the plugin's name: checked by the caller
        for choice in literal_choices(field.annotation):
            if not mentioned(choice):
                problems.append(f"{dotted}: the choice {choice!r} is not listed in base.yaml")
        slot = next((m for m in field.metadata if isinstance(m, PluginSlot)), None)
        if slot is not None:
            walk_plugin(slot, node, name, dotted, problems)
            continue
        sub = unwrap_model(field.annotation)
        if typing.get_origin(field.annotation) is dict:
            continue  # tiers: checked in test_every_tier_field_is_named
        if sub is not None:
            if not isinstance(node.get(name), dict):
                problems.append(f"{dotted}: section missing from base.yaml")
                continue
            walk(sub, node[name], (*path, name), problems)
            continue
        default = field.get_default(call_default_factory=True)
        if name not in node:
            problems.append(f"{dotted}: missing from base.yaml (code default {default!r})")
            continue
        if dotted in SPECIAL:
            assert (node[name], default) == SPECIAL[dotted], dotted
            continue
        if node[name] != default:
            problems.append(f"{dotted}: base.yaml says {node[name]!r}, the code's default is {default!r}")


def walk_plugin(slot: PluginSlot, node: dict, name: str, dotted: str, problems: list[str]) -> None:
    reg = slot.registry
    section = node.get(name)
    if section is None:
        problems.append(f"{dotted}: plugin section missing from base.yaml (default {slot.default!r})")
        return
    section = {reg.key: section} if isinstance(section, str) else section
    chosen = section.get(reg.key)
    if chosen != slot.default:
        problems.append(f"{dotted}.{reg.key}: base.yaml names {chosen!r}, the code's default is {slot.default!r}")
        return
    walk(reg.config_class(chosen), section, tuple(dotted.split(".")), problems)
    for other in reg:
        if not mentioned(other):
            problems.append(f"{dotted}: the {reg.kind} {other!r} is not listed in base.yaml")
        params = reg.config_class(other).model_fields
        for param, field in params.items():
            if param == reg.key or param in section:
                continue
            commented_defaults(f"{dotted}.{param} ({reg.kind} {other!r})", param, field, problems)


def yaml_spellings(value: Any) -> list[str]:
    out = [yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip(), str(value)]
    if isinstance(value, float) and value.is_integer():
        out.append(str(int(value)))
    return out


def commented_defaults(what: str, param: str, field: Any, problems: list[str]) -> None:
    """Another plugin's parameter: named in a comment as `param: default` (a sub-section: each of its fields)."""
    for choice in literal_choices(field.annotation):
        if not mentioned(choice):
            problems.append(f"{what}: the choice {choice!r} is not listed in base.yaml")
    sub = unwrap_model(field.annotation)
    if sub is not None:
        if not mentioned(param):
            problems.append(f"{what}: not named in base.yaml")
        for name, subfield in sub.model_fields.items():
            commented_defaults(f"{what}.{name}", name, subfield, problems)
        return
    default = field.get_default(call_default_factory=True)
    if not any(
        re.search(rf"\b{re.escape(param)}:\s*{re.escape(spelling)}(?![\w.])", TEXT)
        for spelling in yaml_spellings(default)
    ):
        problems.append(f"{what}: not listed in base.yaml's comments as '{param}: {yaml_spellings(default)[0]}'")


def test_base_yaml_holds_every_default_of_the_code():
    problems: list[str] = []
    walk(Config, TREE, (), problems)
    assert not problems, "configs/base.yaml and the code's defaults disagree:\n  " + "\n  ".join(problems)


def test_every_tier_field_is_named():
    for field in TierConfig.model_fields:
        assert mentioned(field), f"tiers.<name>.{field} is not named in base.yaml"
    for name, tier in TREE["tiers"].items():
        assert set(tier) <= set(TierConfig.model_fields), name


def test_the_seeds_names_are_named_in_base_yaml():
    for key in (*ALIASES, *SWITCHES):
        assert mentioned(key[-1]), f"{'.'.join(key)} (the seed's name) is not named in base.yaml"


def test_base_yaml_is_a_valid_config_equal_to_the_schema_defaults_where_it_sets_nothing_else():
    cfg = load_config(BASE)
    built = Config.model_validate({"tiers": TREE["tiers"]}).to_dict()
    loaded = cfg.to_dict()
    built["experiment_name"] = loaded["experiment_name"]
    assert loaded == built


def test_the_walk_notices_a_disagreement(monkeypatch):
    """The test above would catch a changed code default (not a vacuous walk)."""
    tree = yaml.safe_load(TEXT)
    tree["federation"]["num_rounds"] = 99
    del tree["metrics"]["summary_every"]
    tree["federation"]["scheduler"]["ema"] = 0.7
    problems: list[str] = []
    walk(Config, tree, (), problems)
    text = "\n".join(problems)
    assert "federation.num_rounds" in text and "metrics.summary_every" in text
    assert "federation.scheduler.ema" in text
