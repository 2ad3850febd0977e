"""bench_glue's quantized SmolLM2 rows run on the fp32 clock, and a damaged results file stops a resume in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_glue  # noqa: E402


@pytest.mark.parametrize("task, length", [("sst2", 64), ("rte", 128)])
def test_a_quantized_run_is_priced_with_the_shipped_fp32_profile(task, length):
    config = bench_glue.CONFIGS / "smollm2" / f"{task}_lite.yaml"
    profile = bench_glue.fp32_profile(config, bench_glue.DEFAULT_SETS)
    assert profile.is_file()
    assert profile.name == f"bundled-smollm2-135m_none_b8_l{length}_q_proj-v_proj_cpu.json"

    cfg = bench_glue.run_config(config, ["model.quantization=4bit", f"timing.profile={profile}", "seed=0"])
    assert cfg.experiment_name == f"glue_{task}_lite_smollm2_4bit"
    settings = bench_glue.run_settings(cfg)
    # recorded relative to the repository, so a clone elsewhere reads the same settings
    assert settings["timing.profile"] == f"src/fedranklite/profiles/{profile.name}"
    # a row recorded on its own 4-bit clock (timing.profile null) is run again, and only for that reason
    recorded = {**settings, "timing.profile": None}
    assert bench_glue.changed_settings(recorded, cfg) == ["timing.profile"]
    assert bench_glue.changed_settings(settings, cfg) == []


def test_no_shipped_fp32_profile_is_one_clear_error(tmp_path, monkeypatch):
    import importlib
    import inspect

    # the module bench_glue.fp32_profile takes SHIPPED_DIR from (read from its source, so a move follows)
    module = re.search(r"from (fedranklite\.[\w.]+) import SHIPPED_DIR", inspect.getsource(bench_glue.fp32_profile))
    monkeypatch.setattr(importlib.import_module(module.group(1)), "SHIPPED_DIR", tmp_path)
    config = bench_glue.CONFIGS / "smollm2" / "rte_lite.yaml"
    with pytest.raises(SystemExit, match=r"rte_lite\.yaml: no shipped fp32 CPU rank profile .*_none_b8_l128_"):
        bench_glue.fp32_profile(config, [])


@pytest.mark.parametrize("content", ["{not json", '{"runs": 3}', "[]"])
def test_a_damaged_results_file_stops_a_resume_in_one_line(tmp_path, content):
    out = tmp_path / "glue.json"
    out.write_text(content)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_glue.py"), "--out", str(out), "--only-smollm2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"--out: {out}: " in proc.stderr.strip().splitlines()[-1]
    assert out.read_text() == content  # nothing written over it


def test_a_mistyped_rerun_name_is_one_clear_error_before_any_work(tmp_path):
    out = tmp_path / "glue.json"
    out.write_text('{"runs": [], "superseded": []}')
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_glue.py"), "--out", str(out), "--only-smollm2"]
    cmd += ["--tasks", "rte", "--smollm2-runs", "4bit", "--rerun", "glue_rte_lite_smollm2_4bti"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "--rerun: glue_rte_lite_smollm2_4bti: not among the selected runs" in last
    assert out.read_text() == '{"runs": [], "superseded": []}'
