"""Adding a plugin is one file plus one registry line (docs/plugins.md): a toy scheduler
from tests/plugins/ runs in the engine with its own parameter, and its config rejects other plugins'."""

from __future__ import annotations

import importlib
import sys

import pytest

from fedranklite.backends import BACKENDS
from fedranklite.config.files import load_config, validate
from fedranklite.config.schema import ConfigError
from fedranklite.core.registry import PluginConfig, Registry
from fedranklite.federation.aggregation import AGGREGATORS
from fedranklite.federation.schedulers import SCHEDULERS
from fedranklite.federation.stragglers import STRAGGLER_POLICIES
from fedranklite.federation.timing import TIMING_MODES


@pytest.fixture
def toy():
    module = importlib.import_module("tests.plugins.toy_scheduler")
    yield module
    SCHEDULERS.unregister("toy")
    sys.modules.pop("tests.plugins.toy_scheduler", None)


def test_a_toy_scheduler_runs_in_the_engine_with_its_own_parameter(tiny_config, toy):
    from fedranklite.run.engine import build_engine

    cfg = tiny_config(federation={"num_rounds": 1, "scheduler": {"type": "toy", "r_min": 1, "r_bar": 4, "boost": 5}})
    assert cfg.federation.scheduler.boost == 5.0
    engine = build_engine(cfg)
    assert isinstance(engine.scheduler, toy.ToyScheduler) and engine.scheduler.boost == 5.0
    engine.run()
    ranks = [c.rank for c in engine.state.records[0].clients.rows()]
    # budget 4 x 3 = 12 split 5:1:1 -> 8.57, 1.71, 1.71 -> 8, 2, 2 after the exact-budget repair
    assert ranks == [8, 2, 2]


def test_a_toy_scheduler_rejects_unknown_and_foreign_parameters(tiny_config, toy):
    with pytest.raises(ConfigError, match=r"federation\.scheduler\.ema: unknown key of scheduler 'toy'"):
        tiny_config(federation={"scheduler": {"type": "toy", "ema": 0.5}})
    with pytest.raises(ConfigError, match=r"federation\.scheduler\.boost: Input should be greater than 0"):
        tiny_config(federation={"scheduler": {"type": "toy", "boost": -1}})


def test_unknown_parameters_name_the_plugin_for_every_kind(tmp_path):
    base = {
        "tiers": {"t": {"compute_factor": 1, "num_clients": 2, "memory_gb": 8}},
        "federation": {"clients_per_round": 2},
    }
    cases = [
        ({"federation": {"clients_per_round": 2, "scheduler": {"type": "fixed", "ema": 0.9}}}, "scheduler 'fixed'"),
        ({"federation": {"clients_per_round": 2, "aggregation": {"type": "svd", "rank": 3}}}, "aggregation 'svd'"),
        ({"deadline": {"straggler_policy": {"type": "drop", "grace": 3}}}, "straggler policy 'drop'"),
        ({"timing": {"mode": "measured", "seconds": 1}}, "timing mode 'measured'"),
        ({"engine": {"backend": "local", "flower": {"mode": "simulation"}}}, "backend 'local'"),
    ]
    for section, owner in cases:
        with pytest.raises(ConfigError, match=owner):
            validate({**base, **section})


def test_every_plugin_kind_builds_from_its_config():
    assert callable(AGGREGATORS.build(AGGREGATORS.parse("fedavg")))
    assert STRAGGLER_POLICIES.build(STRAGGLER_POLICIES.parse("use_partial")).stops_at_deadline
    tm = TIMING_MODES.build(TIMING_MODES.parse({"mode": "analytic", "sec_per_sample": 0.1}))
    assert tm.deterministic and tm.compute_seconds(10, 0, 1.0) == pytest.approx(1.0)
    assert SCHEDULERS.build(SCHEDULERS.parse({"type": "fixed", "rank": 3}), r_max=8).rank == 3
    assert BACKENDS["local"].__name__ == "build_engine"  # resolved lazily from "module:attr"


def test_switching_plugin_by_override_drops_the_old_plugins_parameters():
    cfg = load_config(
        "configs/experiments/lite_iid.yaml", ["federation.scheduler.type=cvx", "federation.scheduler.r_bar=6"]
    )
    assert cfg.federation.scheduler.type == "cvx" and cfg.federation.scheduler.r_bar == 6.0
    assert not hasattr(cfg.federation.scheduler, "ema")


def test_a_registry_refuses_duplicates_and_foreign_config_classes():
    reg = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object)

    class Other(PluginConfig):
        pass

    narrow = Registry("gadget", base=type("GadgetParams", (PluginConfig,), {}))
    with pytest.raises(TypeError, match="must subclass"):
        narrow.register("b", Other)(object)
