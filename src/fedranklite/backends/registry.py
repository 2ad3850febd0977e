"""The backend registry: `engine.backend` names a backend, its parameters class and its implementation.

The local backend has no parameters of its own; the others add theirs in their own package
(`backends/flower/params.py`, `backends/surrogate/params.py`). Implementations are named by "module:attr"
strings and imported when a run starts (they import the round loop, which imports the config).
"""

from __future__ import annotations

from typing import Any

from fedranklite.core.registry import PluginConfig, Registry


class BackendParams(PluginConfig):
    """Parameters of the local backend (none); the other backends add theirs."""


BACKENDS: Registry[Any] = Registry("backend", key="backend", base=BackendParams)
BACKENDS.add("local", "fedranklite.run.engine:build_engine")


def start(cfg: Any) -> Any:
    """The run object of the config's backend: `.run(on_round=..., resume=...)` returns the summary."""
    return BACKENDS[cfg.engine.backend](cfg)
