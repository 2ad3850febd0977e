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
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedranklite.config.files import ALIASES, FILE_PATH_KEYS, SWITCHES
from fedranklite.config.help_text import SLOT_INTROS, field_help, own_doc, plugin_help, tidy
from fedranklite.config.schema import PLUGIN_SLOTS, Config, unwrap_model
from fedranklite.core.registry import PluginConfig, PluginSlot, Registry

PAGE_TITLE = "Configuration reference"


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
    doc = own_doc(model)
    yield heading(2, f"{title}", title)
    if doc:
        yield tidy(doc) + "\n"
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
