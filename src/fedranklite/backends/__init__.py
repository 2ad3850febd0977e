"""Backends: who runs step 3 of the round loop (client training), chosen by `engine.backend`.

    local      in this process, one resident model, clients one after another (run/engine.py)
    flower     as Flower messages to ClientApps, in Flower's simulation engine or on a SuperLink with
               SuperNodes (backends/flower/, needs the `flower` extra)
    surrogate  a calibrated what-if model instead of training, for 100k-client questions (backends/surrogate/)

Each backend's parameters class sits beside its code (`flower/params.py`, `surrogate/params.py`); its
implementation is named by a "module:attr" string and imported when a run starts, because the
implementations import the config loader and Flower is an optional dependency. A backend's `start(cfg)` returns
an object with `run(on_round, resume) -> summary dict` and the `metric` it scores.
"""

from fedranklite.backends.flower import params as _flower  # noqa: F401  (registration)
from fedranklite.backends.registry import BACKENDS, BackendParams, start
from fedranklite.backends.surrogate import params as _surrogate  # noqa: F401  (registration)

__all__ = ["BACKENDS", "BackendParams", "start"]
