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
