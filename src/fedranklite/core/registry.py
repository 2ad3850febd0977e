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
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Generic, Iterator, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny, ValidationInfo, WrapValidator, create_model, field_validator
from pydantic_core import PydanticCustomError

T = TypeVar("T")


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

    def __init__(self, kind: str, key: str = "type", base: type[PluginConfig] = PluginConfig):
        self.kind, self.key, self.base = kind, key, base
        self._entries: dict[str, Entry[T]] = {}

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

    # ---- lookup
    def entry(self, name: str) -> Entry[T]:
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
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; choose one of {sorted(self._entries)}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
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
