"""Experiment files: YAML with `_base_` inheritance, a plugin-aware deep merge, `--set` overrides, and
validation into the schema of config.py.

Every problem is reported before any model or data is touched, as ``<file>: <dotted.key>: <why>``,
where <file> is the YAML file (or ``--set``) that last wrote that key.

The seed document's names for keys the schema spells otherwise (`data.partition.method`,
`evaluation.target_score`, `model.lora.r_min`, ...; `ALIASES`) are rewritten to the schema's names in each
file and each `--set` before anything merges, so they inherit, merge and override exactly like the schema's
names; errors still name the key as the user wrote it. `deadline.enabled` is merged like any key and
resolved just before validation (false: no deadline, whatever `deadline.seconds` says).

Paths to the user's data in a config file (`FILE_PATH_KEYS`) are read relative to that file's folder;
paths given with `--set` relative to the current directory.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from fedranklite.config.schema import PLUGIN_SLOTS, Config, ConfigError, semantic_problems, unwrap_model
from fedranklite.core.messages import one_line, shown
from fedranklite.core.registry import PluginSlot
from fedranklite.core.safeyaml import YamlError, load_yaml_text, read_yaml_file
from fedranklite.data.glue import preset
from fedranklite.data.textsplit import DataError

BASE_KEY = "_base_"

log = logging.getLogger(__name__)

# The seed document's key -> the schema's key for the same setting. The schema's names are what a run's
# config.yaml records (so resumed runs and finished sweeps compare equal whichever name a file used).
ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("data", "partition", "method"): ("data", "partition", "type"),
    ("evaluation", "target_score"): ("evaluation", "target"),
    ("evaluation", "eval_frequency"): ("evaluation", "eval_every"),
    ("evaluation", "frequency"): ("evaluation", "eval_every"),
    # the seed lists r_min among the model's LoRA parameters; here it is the schedulers' lower rank bound
    ("model", "lora", "r_min"): ("federation", "scheduler", "r_min"),
}
# keys that are not schema fields but switches resolved on the merged tree (`_resolve_switches`)
SWITCHES: dict[tuple[str, ...], str] = {
    ("deadline", "enabled"): "true | false; false: no deadline whatever deadline.seconds says",
}
# paths in a config file that are read relative to the file's folder (a --set path: the current directory)
FILE_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("data", "train_file"),
    ("data", "eval_file"),
    ("data", "data_dir"),
    ("federation", "client_trace"),
)


class Sources(dict):
    """dotted key -> the file (or `--set`) that last wrote it; `spelled`: schema key -> the alias the user
    wrote for it (errors name the key as written); `notes`: one line per alias or switch read."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.spelled: dict[str, str] = {}
        self.notes: list[str] = []


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _get(tree: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    """Set `path` in `tree` (copying the dicts on the way, so a shared base is never changed); a plugin
    section written as a bare name becomes a mapping with that name."""
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        slot = PLUGIN_SLOTS.get(path[: i + 1])
        if isinstance(child, str) and slot is not None:
            child = {slot.registry.key: child}
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    node[path[-1]] = value


def _pop(tree: dict, path: tuple[str, ...]) -> None:
    node = tree
    for part in path[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    node.pop(path[-1])


def canonical_names(tree: dict, where: str, sources: Optional[Sources] = None, layer: bool = True) -> dict:
    """One layer (a file, a preset or a `--set`) with the seed's names rewritten to the schema's (`ALIASES`).
    Both names in one layer with different values is an error naming the layer. `layer=False`: a merged
    tree (the spellings recorded layer by layer stand)."""
    tree = dict(tree)
    for alias, canonical in ALIASES.items():
        found, value = _get(tree, alias)
        if not found:
            if sources is not None and layer and _get(tree, canonical)[0]:
                sources.spelled.pop(_dotted(canonical), None)  # this layer spells it the schema's way
            continue
        has_canonical, current = _get(tree, canonical)
        if has_canonical and current != value:
            raise ConfigError(
                f"{where}: {_dotted(alias)}: {value!r} differs from {_dotted(canonical)}: {current!r} "
                f"(two names of one setting; keep one)"
            )
        _pop(tree, alias)
        _set(tree, canonical, value)
        if sources is not None:
            sources.spelled[_dotted(canonical)] = _dotted(alias)
            sources.notes.append(f"{where}: {_dotted(alias)} is read as {_dotted(canonical)}")
    return tree


def _relative_to_file(tree: dict, folder: Path) -> dict:
    """The user's data paths of one config file, made relative to the file's folder."""
    for key in FILE_PATH_KEYS:
        found, value = _get(tree, key)
        if found and isinstance(value, str) and value.strip() and not Path(os.path.expanduser(value)).is_absolute():
            tree = dict(tree)
            _set(tree, key, str(folder / value))
    return tree


def _resolve_switches(tree: dict, sources: dict, origin: str) -> dict:
    """`deadline.enabled` (the seed's switch): false = no deadline whatever `deadline.seconds` says; true
    needs `deadline.seconds`; absent or null: `deadline.seconds` decides (null = no deadline)."""
    found, enabled = _get(tree, ("deadline", "enabled"))
    if not found:
        return tree
    where = _source_of("deadline.enabled", sources, origin)
    tree = dict(tree)
    _pop(tree, ("deadline", "enabled"))
    seconds = _get(tree, ("deadline", "seconds"))[1]
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError(
            f"invalid configuration:\n  {where}: deadline.enabled: expected true or false (got {shown(enabled)})"
        )
    if enabled is True and seconds is None:
        raise ConfigError(
            f"invalid configuration:\n  {where}: deadline.enabled: true needs deadline.seconds "
            f"(the simulated seconds a round may last)"
        )
    if enabled is False and seconds is not None:
        _set(tree, ("deadline", "seconds"), None)
        if isinstance(sources, Sources):
            sources.notes.append(f"{where}: deadline.enabled is false: no deadline (deadline.seconds={seconds} unused)")
    return tree


def deep_merge(base: dict, override: dict, path: tuple[str, ...] = ()) -> dict:
    """Dicts merge key by key; lists and scalars in `override` replace those in `base`. A plugin section
    (scheduler, aggregation, ...) whose plugin `override` changes keeps only the inherited parameters the
    new plugin has: `--set federation.scheduler.type=cvx` on a lite config drops lite's `ema`, keeps `r_bar`."""
    out = dict(base)
    for key, value in override.items():
        where = (*path, str(key))
        slot = PLUGIN_SLOTS.get(where)
        if slot is not None:
            out[key] = _merge_plugin(slot, out.get(key), value, where)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, where)
        else:
            out[key] = value
    return out


def _merge_plugin(slot: PluginSlot, base: Any, override: Any, path: tuple[str, ...]) -> Any:
    reg = slot.registry
    base = {reg.key: base} if isinstance(base, str) else base
    override = {reg.key: override} if isinstance(override, str) else override
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    old, new = base.get(reg.key, slot.default), override.get(reg.key, base.get(reg.key, slot.default))
    if new != old and isinstance(new, str) and new in reg:
        fields = reg.config_class(new).model_fields
        base = {k: v for k, v in base.items() if k in fields}
    return deep_merge(base, override, path)


def _record_sources(tree: Any, source: str, prefix: str, sources: dict[str, str]) -> None:
    """Which file wrote each key. A null in a file (base.yaml lists every optional key as null) is not
    blamed: a problem with that key names the file that last wrote its section (`_source_of`), e.g. the
    one that set `data.source: files` without `data.train_file`."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if value is None:
                sources.pop(dotted, None)
                continue
            sources[dotted] = source
            _record_sources(value, source, dotted, sources)


def _read_yaml(path: Path) -> dict:
    try:
        data = read_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except YamlError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


PRESET_PREFIXES = ("glue:",)


def _preset(name: str, path: Path) -> dict:
    """The config tree of a virtual base such as `glue:rte` (the task defaults in fedranklite/glue.py)."""
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
            preset_tree = canonical_names(_preset(base, path), base, sources)
            _record_sources(preset_tree, base, "", sources)
            merged = deep_merge(merged, preset_tree)
            continue
        base_path = path.parent / base
        if not base.strip() or not base_path.is_file():
            why = "is not a file" if base_path.exists() else "not found"
            raise ConfigError(f"{path}: {BASE_KEY}: base file {base_path} {why}")
        merged = deep_merge(merged, _load_tree(base_path, (*chain, path), sources))
    data = _relative_to_file(canonical_names(data, str(path), sources), path.parent)
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
        value = load_yaml_text(raw) if raw.strip() else ""
    except YamlError as exc:
        if not str(exc).startswith(("not valid YAML", "a value cannot be read")):  # e.g. 2024-02-30: a string
            # here; a duplicate key or an alias bomb is refused
            raise ConfigError(f"--set {one_line(item, 80)}: {exc}") from None
        value = raw  # e.g. a path with ': ' in it
    return parts, value


def apply_overrides(tree: dict, overrides: list[str], sources: dict[str, str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        patch: Any = value
        for part in reversed(parts):
            patch = {part: patch}
        patch = canonical_names(patch, f"--set {item}", sources if isinstance(sources, Sources) else None)
        parts, value = _canonical_path(parts), _get(patch, tuple(_canonical_path(parts)))[1]
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


def _canonical_path(parts: list[str]) -> list[str]:
    """The schema's path of a --set key that is (or lies under) an alias."""
    for alias, canonical in ALIASES.items():
        if tuple(parts[: len(alias)]) == alias:
            return [*canonical, *parts[len(alias) :]]
    return parts


def _spell(dotted: str, sources: dict) -> str:
    """A schema key as the user wrote it (the seed's alias, where a file or --set used one)."""
    for canonical, alias in getattr(sources, "spelled", {}).items():
        if dotted == canonical or dotted.startswith(canonical + "."):
            return alias + dotted[len(canonical) :]
    return dotted


def _source_of(key: str, sources: dict[str, str], default: str) -> str:
    parts = key.split(".")
    while parts:
        found = sources.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return default


def _known_fields(model: type[BaseModel], loc: tuple, tree: Any) -> tuple[list[str], Optional[str]]:
    """Field names valid at the parent of `loc` (for 'did you mean' on a misspelt key), and the plugin
    that section belongs to (None outside plugin sections)."""
    current: Any = model
    plugin = None
    node = tree
    for i, part in enumerate(loc[:-1]):
        node = node.get(part) if isinstance(node, dict) else None
        slot = PLUGIN_SLOTS.get(tuple(str(p) for p in loc[: i + 1]))
        if slot is not None:
            if isinstance(node, str):  # a bare plugin name
                name = node
            elif isinstance(node, dict) or node is None:
                name = (node or {}).get(slot.registry.key, slot.default)
            else:
                name = None
            if not (isinstance(name, str) and name in slot.registry):
                return [], None
            current = slot.registry.config_class(name)
            plugin = f"{slot.registry.kind} {name!r}"
            continue
        fields = getattr(current, "model_fields", {})
        if part in fields:
            current = unwrap_model(fields[part].annotation)
            plugin = None
        # else: a dict key such as a tier name; its value type is already `current`
        if current is None:
            return [], None
    return list(getattr(current, "model_fields", {})), plugin


def _format_pydantic(exc: ValidationError, sources: dict[str, str], default: str, tree: Any) -> list[str]:
    messages = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        where = _source_of(dotted, sources, default)
        if err["type"] == "extra_forbidden":
            known, plugin = _known_fields(Config, loc, tree)
            if len(loc) == 1:
                known.append(BASE_KEY)  # a misspelt `_base_` at the top level
            parent = tuple(str(p) for p in loc[:-1])
            known += [key[-1] for key in (*ALIASES, *SWITCHES) if key[:-1] == parent]  # the seed's names too
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            owner = f" of {plugin}" if plugin else ""
            messages.append(f"{where}: {dotted}: unknown key{owner}{hint}")
        else:
            given = err.get("input")
            slot = PLUGIN_SLOTS.get(tuple(str(p) for p in loc))
            if slot is not None and err["type"] in ("unknown_plugin", "plugin_missing") and isinstance(given, dict):
                dotted = f"{dotted}.{slot.registry.key}"  # name the key that holds the plugin's name
                where = _source_of(dotted, sources, default)
            given_txt = "" if isinstance(given, dict) or err["type"] == "unknown_plugin" else f" (got {shown(given)})"
            msg = err["msg"].removeprefix("Value error, ")
            messages.append(f"{where}: {_spell(dotted, sources)}: {msg}{given_txt}")
    return messages


def validate(tree: dict, sources: Optional[dict[str, str]] = None, origin: str = "<config>") -> Config:
    """A merged config tree -> a Config. The seed's names (`ALIASES`) and `deadline.enabled` are accepted
    here too, for trees built in code."""
    sources = sources if sources is not None else Sources()
    tree = _resolve_switches(
        canonical_names(tree, origin, sources if isinstance(sources, Sources) else None, layer=False), sources, origin
    )
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise _invalid(_format_pydantic(exc, sources, origin, tree)) from None
    problems = semantic_problems(cfg)
    if problems:
        raise _invalid([f"{_source_of(key, sources, origin)}: {_spell(key, sources)}: {msg}" for key, msg in problems])
    return cfg


MAX_PROBLEMS = 12  # lines of one config error; a file of 10,000 unknown keys is summed up, not listed


def _invalid(lines: list[str]) -> ConfigError:
    shown_lines = [one_line(ln) for ln in lines[:MAX_PROBLEMS]]
    if len(lines) > MAX_PROBLEMS:
        shown_lines.append(f"... and {len(lines) - MAX_PROBLEMS} more problems")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(shown_lines))


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Load a YAML experiment file (with its `_base_` chain) and `--set` overrides into a Config."""
    sources = Sources()
    path = Path(path)
    tree = _load_tree(path, (), sources)
    tree = apply_overrides(tree, list(overrides or []), sources)
    if tree.get("experiment_name") is None:  # results/<the experiment file's name>/ unless the config names one
        tree["experiment_name"] = path.stem
    cfg = validate(tree, sources, origin=str(path.resolve()))
    for note in dict.fromkeys(sources.notes):
        log.info(note)
    return cfg


def dump_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML, written atomically (a reader never sees half a file)."""
    from fedranklite.core.results_io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: leaf value} (an empty section is a leaf; an empty tree is {})."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
