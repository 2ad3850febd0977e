"""Plugins: a registry ties a name to its config class and its implementation.

Every pluggable kind (scheduler, aggregator, partitioner, straggler policy, timing mode, backend) has one
`Registry`. A plugin is one file holding its config class (a `PluginConfig` subclass with the plugin's own
parameters) and its implementation, registered with one decorator line, as peft's `register_peft_method`
ties a tuner to its config:

    class ToyParams(SchedulerParams):
        boost: float = 1.0

    @SCHEDULERS.register("toy", ToyParams)
    class ToyScheduler(Scheduler): ...

A config section names the plugin by the registry's key (`type`, or `mode` / `backend` for timing and
the engine) and holds only that plugin's parameters: an unknown parameter is an error naming the plugin.
A plugin without parameters may be written as a bare name (`aggregation: blockwise`).

Plugins from other distributions: each registry reads one entry point group (`ENTRY_POINT_GROUPS`:
`fedranklite.schedulers`, `fedranklite.aggregators`, `fedranklite.partitioners`,
`fedranklite.straggler_policies`, `fedranklite.timing_modes`, `fedranklite.backends`, `fedranklite.scores`)
the first time it is looked up or listed. The entry point's name is the plugin's name; its value is either

    toy = my_package.toy:ToyScheduler   the implementation; its parameters are its `config_class`
                                        attribute (a subclass of the registry's base config), none if absent
    toy = my_package.toy                a module that registers `toy` itself with the decorator above

in the distribution's metadata (pyproject.toml):

    [project.entry-points."fedranklite.schedulers"]
    toy = "my_package.toy:ToyScheduler"

A plugin that fails to load (an import error, a name already taken, a config class of the wrong kind) is
reported in one warning line naming its distribution and entry point and is left out; the built-ins and the
other plugins stay usable, and a config that names the broken plugin gets that line as its error.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import types
from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Generic, Iterator, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny, ValidationInfo, WrapValidator, create_model, field_validator
from pydantic_core import PydanticCustomError

T = TypeVar("T")

log = logging.getLogger("fedranklite")

# registry kind -> the entry point group its plugins from other distributions are read from
ENTRY_POINT_GROUPS = {
    "scheduler": "fedranklite.schedulers",
    "aggregation": "fedranklite.aggregators",
    "partitioner": "fedranklite.partitioners",
    "straggler policy": "fedranklite.straggler_policies",
    "timing mode": "fedranklite.timing_modes",
    "backend": "fedranklite.backends",
    "evaluation metric": "fedranklite.scores",
}
_DEFAULT_GROUP: Any = object()


def is_number_annotation(annotation: Any) -> bool:
    """int, float or Optional of either."""
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


def is_text_annotation(annotation: Any, of_list: bool = False) -> bool:
    """str or Optional[str] (`of_list`: list[str] or Optional[list[str]])."""
    import typing

    wanted = list[str] if of_list else str
    if annotation == wanted:
        return True
    if typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType":
        return wanted in typing.get_args(annotation)
    return False


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen once validated."""

    # allow_inf_nan=False: `lr: .inf`, `compute_factor: nan` or the string "inf" are refused for every float
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode would turn `num_rounds: true` into 1: a YAML boolean is never a number here
        if (
            isinstance(value, bool)
            and info.field_name in cls.model_fields
            and is_number_annotation(cls.model_fields[info.field_name].annotation)
        ):
            raise ValueError(f"expected a number, got the boolean {value}")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _no_blank_text(cls, value: Any, info: ValidationInfo) -> Any:
        # `--set timing.profile=` or `data_dir: ""` reads as an empty string: taken as given it was silently the
        # default for some keys (a profile measured under load instead of the one meant) and a path to the
        # current directory for others; a key that is meant to take its default is left out or null
        if (
            isinstance(value, str)
            and not value.strip()
            and info.field_name in cls.model_fields
            and is_text_annotation(cls.model_fields[info.field_name].annotation)
        ):
            nullable = cls.model_fields[info.field_name].default is None
            raise ValueError(f"is empty; leave the key out{' (or write null)' if nullable else ''} for its default")
        if (
            isinstance(value, list)
            and info.field_name in cls.model_fields
            and is_text_annotation(cls.model_fields[info.field_name].annotation, of_list=True)
        ):
            blank = [i for i, item in enumerate(value) if isinstance(item, str) and not item.strip()]
            if blank:  # target_modules: [''] reached peft, text_columns: [''] the data loader
                raise ValueError(f"item {blank[0]} is empty")
        return value


class PluginConfig(Section):
    """Parameters of one plugin. The registry adds the discriminating field (`type`, `mode`, ...) with
    the plugin's name as its only allowed value."""

    plugin_key: ClassVar[str] = "type"  # the discriminating field, set by the registry

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        """Checks of this plugin's parameters against the rest of the config (dotted key relative to the
        plugin's section, message). Checks within the section belong in pydantic validators."""
        return []

    @property
    def name(self) -> str:
        return getattr(self, self.plugin_key)


@dataclass(frozen=True)
class PluginSlot:
    """Marks a config field that holds one plugin of `registry` (the config loader reads it to name the
    plugin in errors and to merge sections when a later file picks another plugin)."""

    registry: "Registry"
    default: Optional[str]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    config: type[PluginConfig]  # the registered config class (with its discriminating field)
    impl: T


class Registry(Generic[T]):
    """name -> (config class, implementation) for one kind of plugin."""

    def __init__(
        self,
        kind: str,
        key: str = "type",
        base: type[PluginConfig] = PluginConfig,
        group: Optional[str] = _DEFAULT_GROUP,
    ):
        """`group`: the entry point group plugins of other distributions are read from (default: the kind's
        group in ENTRY_POINT_GROUPS, none for other kinds; None: no entry points)."""
        self.kind, self.key, self.base = kind, key, base
        self.group: Optional[str] = ENTRY_POINT_GROUPS.get(kind) if group is _DEFAULT_GROUP else group
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = self.group is None
        self._from_plugins: dict[str, str] = {}  # name -> the distribution it came from
        self.broken: dict[str, str] = {}  # entry point name -> the one line saying why it was left out

    # ---- registration
    def register(self, name: str, config: Optional[type[PluginConfig]] = None) -> Callable[[T], T]:
        """Decorator: register the decorated implementation under `name` with `config` (default: the
        registry's base class, i.e. no parameters of its own)."""

        def add(impl: T) -> T:
            self.add(name, impl, config)
            return impl

        return add

    def add(self, name: str, impl: T | str, config: Optional[type[PluginConfig]] = None) -> type[PluginConfig]:
        """`impl` may be a "package.module:attr" string: the config class is known at once, the module is
        imported when the plugin is first built (for implementations whose imports would form a cycle with
        the config loader, or need an optional dependency)."""
        if name in self._from_plugins:  # a built-in registered after the entry points were read wins
            line = (
                f"{self.kind} plugin {name!r} of distribution {self._from_plugins.pop(name)} is left out: "
                f"the name is taken by a built-in {self.kind}"
            )
            self.broken[name] = line
            log.warning(line)
            self._entries.pop(name, None)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        params = config or self.base
        if not issubclass(params, self.base):
            raise TypeError(f"{self.kind} {name!r}: its config must subclass {self.base.__name__}")
        # the title names the plugin in validation errors ("1 validation error for partitioner 'iid'"),
        # so an unknown parameter says which plugin rejected it
        registered = create_model(
            params.__name__,
            __base__=params,
            __module__=params.__module__,
            __cls_kwargs__={"title": f"{self.kind} {name!r}"},
            **{self.key: (Literal[name], name)},
        )
        registered.plugin_key = self.key
        self._entries[name] = Entry(name, registered, impl)
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin (tests that register a toy one clean up after themselves)."""
        self._entries.pop(name, None)
        self._from_plugins.pop(name, None)

    # ---- plugins of other distributions (entry points)
    def load_plugins(self) -> None:
        """Register the plugins of this registry's entry point group, once (every lookup calls this)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # first: a plugin module that looks a name up while it loads must not recurse
        from importlib.metadata import entry_points

        from fedranklite.core.messages import one_line

        try:
            found = list(entry_points(group=self.group))
        except Exception as exc:  # unreadable metadata of some installed distribution
            log.warning("%s plugins (entry point group %s) not loaded: %s", self.kind, self.group, one_line(exc))
            return
        seen: set[tuple[str, str]] = set()
        for ep in found:
            if (ep.name, ep.value) in seen:  # the same distribution reachable twice on the path
                continue
            seen.add((ep.name, ep.value))
            dist = _distribution_name(ep)
            try:
                self._load_entry_point(ep, dist)
            except Exception as exc:
                line = (
                    f"{self.kind} plugin {ep.name!r} of distribution {dist} (entry point {self.group}: "
                    f"{ep.name} = {ep.value}) is left out: {one_line(exc)}"
                )
                self.broken.setdefault(ep.name, line)
                log.warning(line)

    def _load_entry_point(self, ep: Any, dist: str) -> None:
        if ep.name in self._entries:
            taken = self._from_plugins.get(ep.name)
            raise ValueError(f"the name is taken by {'the plugin of ' + taken if taken else 'a built-in ' + self.kind}")
        before = set(self._entries)
        obj = ep.load()
        if isinstance(obj, types.ModuleType):  # a module that registers itself with the decorator
            if ep.name not in self._entries:
                raise ValueError(f"importing {obj.__name__} registered no {self.kind} named {ep.name!r}")
        else:  # the implementation, with its parameters as `config_class`
            config = getattr(obj, "config_class", None)
            if config is not None and not (isinstance(config, type) and issubclass(config, self.base)):
                raise TypeError(f"its config_class must be a subclass of {self.base.__name__}")
            self.add(ep.name, obj, config)
        for name in set(self._entries) - before:
            self._from_plugins[name] = dist

    def reload_plugins(self) -> None:
        """Forget the plugins read from entry points and read them again on the next lookup (after a
        distribution was installed in a running process; tests)."""
        for name in list(self._from_plugins):
            self.unregister(name)
        self.broken.clear()
        self._plugins_loaded = self.group is None

    def origin(self, name: str) -> Optional[str]:
        """The distribution a plugin came from through an entry point (None: registered in-process)."""
        self.load_plugins()
        return self._from_plugins.get(name)

    # ---- lookup
    def entry(self, name: str) -> Entry[T]:
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def __getitem__(self, name: str) -> T:
        impl = self.entry(name).impl
        if isinstance(impl, str):  # "package.module:attr", imported on first use (see `add`)
            module, _, attr = impl.partition(":")
            impl = getattr(importlib.import_module(module), attr)
        return impl

    def config_class(self, name: str) -> type[PluginConfig]:
        return self.entry(name).config

    def unknown_message(self, name: Any) -> str:
        self.load_plugins()
        if isinstance(name, str) and name in self.broken:
            return self.broken[name]
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; choose one of {sorted(self._entries)}"

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    # ---- config fields
    def parse(self, value: Any, default: Optional[str] = None) -> PluginConfig:
        """A section's raw value -> the named plugin's validated config. Raises pydantic errors, so the
        config loader reports them under the section's dotted key."""
        if isinstance(value, PluginConfig):
            if value.name not in self:
                raise PydanticCustomError("unknown_plugin", self.unknown_message(value.name))
            return value
        if isinstance(value, str):
            value = {self.key: value}
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "plugin_section",
                f"expected a {self.kind} name or a mapping with '{self.key}', got {type(value).__name__}",
            )
        name = value.get(self.key, default)
        if name is None:
            raise PydanticCustomError("plugin_missing", f"'{self.key}' is required: the {self.kind} to use")
        if not isinstance(name, str) or name not in self:
            raise PydanticCustomError("unknown_plugin", self.unknown_message(name))
        return self.config_class(name).model_validate({**value, self.key: name})

    def field(self, default: Optional[str] = None) -> Any:
        """The annotation of a config field holding one of this registry's plugins:
        `scheduler: SCHEDULERS.field() = Field("lite", validate_default=True)`; `default` is the plugin a
        section without the key means."""

        def validate(value: Any, handler: Any) -> PluginConfig:
            return self.parse(value, default)

        return Annotated[SerializeAsAny[self.base], WrapValidator(validate), PluginSlot(self, default)]

    def build(self, config: PluginConfig, *args: Any, **kwargs: Any) -> Any:
        """The implementation of `config`'s plugin, built from it: `impl.from_config(config, ...)` when the
        implementation has one, else `impl` itself (plain functions and stateless objects)."""
        impl = self[config.name]
        from_config = getattr(impl, "from_config", None)
        return from_config(config, *args, **kwargs) if from_config is not None else impl


def _distribution_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)"
    try:
        return str(dist.metadata["Name"] or dist.name)
    except Exception:
        return "(unknown distribution)"
