"""Plugins of other distributions through entry points (core/registry.py): a fake installed distribution
on sys.path registers a scheduler with its own parameters, and a run selects it by name; a broken plugin
is one warning line naming its distribution and entry point, and the built-ins stay usable."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_tree

from fedranklite.config.schema import ConfigError
from fedranklite.core.registry import ENTRY_POINT_GROUPS, Registry
from fedranklite.federation.aggregation import AGGREGATORS
from fedranklite.federation.schedulers import SCHEDULERS
from tests.plugins.distribution import BOOST_SCHEDULER, write_distribution

ROOT = Path(__file__).resolve().parents[1]
GROUP = "fedranklite.schedulers"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """install(name, entry_points, files): a fake distribution on sys.path; the registries read it afresh."""
    site = tmp_path / "site"
    packages: list[str] = []

    def install(name: str, entry_points: dict, files: dict) -> Path:
        write_distribution(site, name, entry_points, files)
        packages.extend(Path(rel).parts[0] for rel in files)
        importlib.invalidate_caches()
        SCHEDULERS.reload_plugins()
        AGGREGATORS.reload_plugins()
        return site

    monkeypatch.syspath_prepend(str(site))
    yield install
    for mod in [m for m in sys.modules if m.split(".")[0] in packages]:
        sys.modules.pop(mod)
    importlib.invalidate_caches()
    SCHEDULERS.reload_plugins()  # after sys.path is restored: the fake distribution is gone
    AGGREGATORS.reload_plugins()


def boost_distribution(install) -> Path:
    return install(
        "boost-sched",
        {GROUP: {"boost": "boost_sched:BoostScheduler"}},
        {"boost_sched/__init__.py": BOOST_SCHEDULER},
    )


def test_a_scheduler_of_another_distribution_runs_by_name_with_its_own_parameter(installed, tiny_config):
    from fedranklite.run.engine import build_engine

    boost_distribution(installed)
    assert "boost" in SCHEDULERS and SCHEDULERS.origin("boost") == "boost-sched"
    assert SCHEDULERS.origin("lite") is None and "lite" in list(SCHEDULERS)
    cfg = tiny_config(federation={"num_rounds": 2, "scheduler": {"type": "boost", "r_min": 1, "r_bar": 4, "boost": 5}})
    assert type(cfg.federation.scheduler).__name__ == "BoostParams" and cfg.federation.scheduler.boost == 5.0
    engine = build_engine(cfg)
    assert type(engine.scheduler).__name__ == "BoostScheduler" and engine.scheduler.boost == 5.0
    engine.run()
    assert len(engine.state.records) == 2
    for record in engine.state.records:
        # budget 4 x 3 = 12 split 5:1:1 -> 8.57, 1.71, 1.71 -> 8, 2, 2 after the exact-budget repair
        assert [c.rank for c in record.clients.rows()] == [8, 2, 2]
    with pytest.raises(ConfigError, match=r"federation\.scheduler\.boost: Input should be greater than 0"):
        tiny_config(federation={"scheduler": {"type": "boost", "boost": 0}})
    with pytest.raises(ConfigError, match=r"federation\.scheduler\.ema: unknown key of scheduler 'boost'"):
        tiny_config(federation={"scheduler": {"type": "boost", "ema": 0.5}})


def test_a_module_entry_point_registers_itself_with_the_decorator(installed, tiny_config):
    module = BOOST_SCHEDULER + '\n\nSCHEDULERS.register("boost_mod", BoostParams)(BoostScheduler)\n'
    module = module.replace("import Clients,", "import SCHEDULERS, Clients,")
    installed("boost-mod", {GROUP: {"boost_mod": "boost_mod"}}, {"boost_mod/__init__.py": module})
    assert SCHEDULERS.origin("boost_mod") == "boost-mod"
    cfg = tiny_config(federation={"scheduler": {"type": "boost_mod", "r_min": 1, "r_bar": 4, "boost": 2}})
    assert cfg.federation.scheduler.boost == 2.0


def broken_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "is left out" in r.getMessage()]


def test_a_broken_plugin_is_one_line_naming_distribution_and_entry_point_and_built_ins_still_work(
    installed, tiny_config, caplog
):
    installed(
        "bad-plugins",
        {
            GROUP: {
                "crashes": "bad_plugins.crash:Nothing",  # the module raises on import
                "missing": "bad_plugins.absent:Nothing",  # no such module
                "lite": "bad_plugins.ok:Impostor",  # a built-in's name
                "wrongconf": "bad_plugins.ok:WrongConfig",  # config_class of another kind
                "silent": "bad_plugins.ok",  # a module that registers nothing by that name
            },
            "fedranklite.aggregators": {"shadow": "bad_plugins.absent:agg"},
        },
        {
            "bad_plugins/__init__.py": "",
            "bad_plugins/crash.py": "raise RuntimeError('plugin exploded\\non two lines')\n",
            "bad_plugins/ok.py": (
                "from fedranklite.core.registry import PluginConfig\n"
                "class Impostor: pass\n"
                "class Other(PluginConfig): pass\n"
                "class WrongConfig:\n    config_class = Other\n"
            ),
        },
    )
    with caplog.at_level(logging.WARNING, logger="fedranklite"):
        names = list(SCHEDULERS)
    assert {"lite", "fixed", "cvx"} <= set(names)
    assert not {"crashes", "missing", "wrongconf", "silent"} & set(names)
    assert SCHEDULERS["lite"].__module__ == "fedranklite.federation.schedulers.lite"  # the built-in kept its name
    lines = broken_lines(caplog)
    assert len(lines) == 5, lines
    for line in lines:
        assert "\n" not in line and "distribution bad-plugins" in line and "entry point fedranklite.schedulers" in line
    by_name = {name: next(ln for ln in lines if f"plugin {name!r}" in ln) for name in SCHEDULERS.broken}
    assert "plugin exploded on two lines" in by_name["crashes"]
    assert "bad_plugins.absent" in by_name["missing"]
    assert "taken by a built-in scheduler" in by_name["lite"]
    assert "config_class must be a subclass of SchedulerParams" in by_name["wrongconf"]
    assert "registered no scheduler named 'silent'" in by_name["silent"]
    # a config naming the broken plugin gets that line as its error; the built-ins run as before
    with pytest.raises(ConfigError, match=r"federation\.scheduler.*crashes.*bad-plugins.*plugin exploded"):
        tiny_config(federation={"scheduler": {"type": "crashes"}})
    assert tiny_config(federation={"scheduler": {"type": "fixed", "rank": 2}}).federation.scheduler.rank == 2
    with caplog.at_level(logging.WARNING, logger="fedranklite"):
        assert "fedavg" in AGGREGATORS and "shadow" not in AGGREGATORS
    assert any("aggregation plugin 'shadow' of distribution bad-plugins" in ln for ln in broken_lines(caplog))


def test_list_shows_a_broken_plugin_with_its_reason_next_to_the_built_ins(installed, capsys):
    from fedranklite.cli import main as cli

    installed(
        "bad-plugins",
        {GROUP: {"crashes": "bad_plugins:Nothing"}},
        {"bad_plugins/__init__.py": "raise ImportError('needs a package that is not installed')\n"},
    )
    assert cli.main(["list", "schedulers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  lite  " in "\n".join(out) and "  fixed  " in "\n".join(out)
    broken = [ln for ln in out if ln.startswith("  crashes  NOT LOADED: ")]
    assert len(broken) == 1 and "bad-plugins" in broken[0] and "needs a package that is not installed" in broken[0]


def test_entry_points_are_read_once_and_only_for_registries_with_a_group(installed, monkeypatch):
    boost_distribution(installed)
    calls = []
    import importlib.metadata as md

    real = md.entry_points

    def counting(**kw):
        calls.append(kw.get("group"))
        return real(**kw)

    monkeypatch.setattr(md, "entry_points", counting)
    SCHEDULERS.reload_plugins()
    assert "boost" in SCHEDULERS and "lite" in SCHEDULERS and len(SCHEDULERS) >= 4
    assert calls == [GROUP]  # lazily, once
    widget = Registry("widget")
    assert widget.group is None and "x" not in widget and calls == [GROUP]
    assert set(ENTRY_POINT_GROUPS.values()) >= {
        "fedranklite.schedulers",
        "fedranklite.aggregators",
        "fedranklite.partitioners",
        "fedranklite.straggler_policies",
        "fedranklite.backends",
    }


def test_the_command_line_lists_and_runs_a_plugin_of_another_distribution(installed, tmp_path):
    site = boost_distribution(installed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")]), "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "fedranklite", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    listed = cli("list", "schedulers")
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.split("  boost  [boost-sched]  Gives the first selected client boost times")[1]
    assert re.search(r"\n      boost: number = 3(\.0)?  \(> 0\)  rank multiplier of the first selected client\n", block)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    proc = cli(
        "run",
        "-c",
        str(config),
        "-q",
        "--set",
        "federation.num_rounds=1",
        "--set",
        "federation.scheduler.type=boost",
        "--set",
        "federation.scheduler.boost=5",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["rounds_completed"] == 1
    assert list(metrics["rounds"][0]["ranks"].values()) == [8, 2, 2]  # as in the in-process run above
