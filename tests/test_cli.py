"""The command line as a user runs it: exit codes, messages, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import tiny_tree

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "fedranklite", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_bad_config_exits_2_naming_file_and_key_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("_base_: %s\nfederation:\n  scheduler:\n    typ: lite\n" % (ROOT / "configs" / "base.yaml"))
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 2
    assert "federation.scheduler.typ" in proc.stderr and str(path) in proc.stderr
    assert "did you mean 'type'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_override_is_rejected(tmp_path):
    proc = cli(
        "run", "--config", str(ROOT / "configs/experiments/lite_iid.yaml"), "--set", "federation.scheduler.r_min=99"
    )
    assert proc.returncode == 2
    assert "--set" in proc.stderr and "federation.scheduler.r_min" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_tiny_config_from_the_command_line(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    proc = cli(
        "run", "--config", str(path), "--quiet", "--set", "federation.num_rounds=1", "--set", "experiment_name=cli_tiny"
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "results" / "cli_tiny" / "metrics.json").read_text())
    assert metrics["rounds_completed"] == 1 and metrics["experiment_name"] == "cli_tiny"
    assert "round 1/1" in proc.stderr


def test_scripts_run_py_is_the_same_command(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "run.py"),
            "--config",
            str(path),
            "-q",
            "--set",
            "federation.num_rounds=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results" / "tiny" / "metrics.json").exists()


def test_centralized_reference_and_budget_label(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    proc = cli("run", "--config", str(path), "--quiet", "--centralized", "--set", "federation.num_rounds=1")
    assert proc.returncode == 0, proc.stderr
    folders = [p.name for p in (tmp_path / "results").iterdir()]
    assert len(folders) == 1 and folders[0].startswith("tiny") and folders[0] != "tiny"
    metrics = json.loads((tmp_path / "results" / folders[0] / "metrics.json").read_text())
    assert metrics["num_clients"] == 1 and metrics["clients_per_round"] == 1
    # the central client trains the federation's round budget: 3 clients x 3 steps
    rec = metrics["rounds"][0]
    assert list(rec["ranks"].values()) == [8]
    assert metrics["budget"]["label"].startswith("capped")


def test_list_shows_every_kind_with_parameters_types_and_defaults(capsys):
    from fedranklite.cli import main as main_module

    assert main_module.main(["list"]) == 0
    out = capsys.readouterr().out
    for header in (
        "schedulers (federation.scheduler.type):",
        "aggregators (federation.aggregation.type):",
        "partitioners (data.partition.type):",
        "straggler-policies (deadline.straggler_policy.type):",
        "timing-modes (timing.mode):",
        "backends (engine.backend):",
        "scores (evaluation.metric):",
    ):
        assert header in out
    assert "      alpha: number = 0.5  (> 0)" in out  # dirichlet's own parameter
    assert "      rank: integer or null = null  (>= 1)" in out  # fixed's
    assert "  mse  regression, lower is better" in out
    assert main_module.main(["list", "straggler_policy"]) == 0
    one = capsys.readouterr().out
    assert one.startswith("straggler-policies") and "schedulers" not in one and "  use_partial  " in one
    for spelling in ("timing", "timing_modes", "Timing-Modes", "timing-mode"):
        assert main_module.main(["list", spelling]) == 0
        assert capsys.readouterr().out.startswith("timing-modes (timing.mode):")
    assert main_module.main(["list", "s"]) == 2  # schedulers, straggler-policies or scores: not guessed
    capsys.readouterr()


def test_list_of_an_unknown_kind_names_the_kinds_in_one_line(capsys):
    from fedranklite.cli import main as main_module

    assert main_module.main(["list", "widgets"]) == 2
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err) == 1 and "'widgets'" in err[0] and "schedulers" in err[0] and "timing-modes" in err[0]
    assert captured.out == ""


def test_sweep_takes_its_spec_as_argument_or_as_config(tmp_path, capsys):
    from fedranklite.cli import main as main_module

    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {base}\nseeds: 2\noutput_dir: {tmp_path / 'sw'}\nschedulers:\n  fixed: {{}}\n")
    outputs = []
    for args in ([str(spec)], ["--config", str(spec)], ["-c", str(spec)]):
        assert main_module.main(["sweep", *args, "--dry-run"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].count("fixed/seed") == 2
    assert main_module.main(["sweep", str(spec), "--retries", "-1", "--dry-run"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--retries" in err[0]
    assert main_module.main(["sweep", "--dry-run"]) == 2
    assert main_module.main(["sweep", str(spec), "-c", str(tmp_path / "other.yaml")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and all("SPEC" in ln for ln in err)
    assert not (tmp_path / "sw").exists()


def test_help_shows_defaults_and_every_config_reading_command_takes_config_and_set(capsys):
    import pytest

    from fedranklite.cli import main as main_module

    for command in ("run", "profile"):
        with pytest.raises(SystemExit):
            main_module.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--config FILE, -c FILE" in text and "--set KEY=VALUE" in text
    with pytest.raises(SystemExit):
        main_module.main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bootstrap resamples (default: 10000)" in text and "(default: None)" not in text
    assert "(default: False)" not in text


def test_flower_plan_writes_one_folder_per_host_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from fedranklite.cli import main as main_module

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    out = tmp_path / "plan"
    assert main_module.main(["flower", "plan", "-c", str(config), "--out", str(out)]) == 0
    hosts = sorted(p.name for p in out.iterdir())
    assert "superlink" in hosts and len([h for h in hosts if h.startswith("supernode")]) == 4  # one per client
    assert (out / "superlink" / "start.sh").is_file()
    capsys.readouterr()
    assert main_module.main(["flower", "plan", "-c", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0]
    bad = ["flower", "plan", "-c", str(config), "--out", str(tmp_path / "p2"), "--set", "engine.flower.tls=false"]
    bad += ["--set", "engine.flower.superlink_host=10.0.0.5", "--set", "engine.flower.supernode_auth=false"]
    assert main_module.main(bad) == 2  # clear text off loopback: the config's own check, one line per problem
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: invalid configuration:" and any("superlink_host" in e and "in clear" in e for e in err)
    assert not (tmp_path / "p2").exists()
