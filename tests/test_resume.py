"""A run killed with SIGKILL in the middle of a round and resumed ends bit-identical to an
uninterrupted run (analytic time model; wall-clock and memory readings excluded, they are measurements)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MEASURED = {"wall_seconds", "throughput", "peak_memory_mb", "wall_time_total"}


def deterministic(obj):
    """`obj` without the fields that are wall-clock or memory measurements."""
    if isinstance(obj, dict):
        return {k: deterministic(v) for k, v in obj.items() if k not in MEASURED}
    if isinstance(obj, list):
        return [deterministic(v) for v in obj]
    return obj


def write_config(tmp_path, name, out):
    """The default timing mode (profile: measured once for the tiny model, then read from the cache) on clients
    with hidden speed deviations and availability, so the telemetry and lost clients are resumed too."""
    hetero = {"speed_sigma": 0.3, "jitter_sigma": 0.1, "availability": 0.8}
    tree = tiny_tree(
        tmp_path,
        experiment_name=name,
        output_dir=str(out),
        federation={"num_rounds": 5, "clients_per_round": 3},
        training={"max_local_steps": 30, "batch_size": 8},
        data={"embedded_train_size": 600},
        timing={"mode": "profile"},
        tiers={"fast": hetero, "slow": hetero},
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def fedranklite(*args):
    return [sys.executable, "-m", "fedranklite", "run", "-q", *args]


def cli_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(fedranklite(*args), capture_output=True, text=True, timeout=300)


@pytest.fixture(autouse=True)
def profile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))  # the runs below share one measured profile


def test_sigkill_mid_round_then_resume_is_bit_identical(tmp_path):
    reference = write_config(tmp_path, "run", tmp_path / "reference")
    proc = subprocess.run(fedranklite("--config", str(reference)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr

    (tmp_path / "k").mkdir()
    killed = write_config(tmp_path / "k", "run", tmp_path / "killed")
    out = tmp_path / "killed" / "run"
    child = subprocess.Popen(
        fedranklite("--config", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        lines = (out / "rounds.jsonl").read_text().splitlines() if (out / "rounds.jsonl").exists() else []
        if len(lines) >= 2 or child.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # well inside round 3 (a round of 3 clients x 30 steps takes over a second)
    assert child.poll() is None, "the run finished before it could be killed: make rounds longer"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    done_before = len(json.loads((out / "metrics.json").read_text())["rounds"])
    assert 2 <= done_before < 5

    resumed = subprocess.run(
        fedranklite("--config", str(killed), "--resume"), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr

    ref_out = tmp_path / "reference" / "run"
    ref_ckpt = load_checkpoint(ref_out / CHECKPOINT_NAME)
    new_ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ref_ckpt["round_idx"] == new_ckpt["round_idx"] == 5
    for name, tensor in ref_ckpt["global_state"].items():
        assert torch.equal(tensor, new_ckpt["global_state"][name]), name
    assert ref_ckpt["scheduler"] == new_ckpt["scheduler"]

    ref_metrics = json.loads((ref_out / "metrics.json").read_text())
    new_metrics = json.loads((out / "metrics.json").read_text())
    assert deterministic(ref_metrics) == deterministic(new_metrics)
    ref_rounds = [json.loads(x) for x in (ref_out / "rounds.jsonl").read_text().splitlines()]
    new_rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in new_rounds] == [1, 2, 3, 4, 5]  # nothing lost, nothing doubled
    assert deterministic(ref_rounds) == deterministic(new_rounds)


def test_resume_refuses_a_different_config_and_a_missing_checkpoint(tmp_path):
    path = write_config(tmp_path, "run", tmp_path / "out")
    missing = cli_run("--config", str(path), "--resume")
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr and "Traceback" not in missing.stderr
    first = cli_run("--config", str(path), "--set", "federation.num_rounds=1")
    assert first.returncode == 0, first.stderr
    other = cli_run("--config", str(path), "--resume", "--set", "training.lr=0.5")
    assert other.returncode == 2 and "different configuration" in other.stderr
    assert "training.lr" in other.stderr and len(other.stderr.strip().splitlines()) == 1, other.stderr


def test_resume_continues_a_finished_shorter_run_in_process(tiny_config):
    from fedranklite.run.engine import build_engine

    cfg = tiny_config(federation={"num_rounds": 3})
    full = build_engine(cfg)
    full.run()
    # same config, killed after round 1: emulate by running one round and checkpointing by hand
    partial = build_engine(cfg)
    record = partial.run_round()
    from fedranklite.core.results_io import rewrite_round_log
    from fedranklite.run.checkpoint import CHECKPOINT_NAME, save_checkpoint

    save_checkpoint(cfg.results_dir / CHECKPOINT_NAME, partial.checkpoint_payload())
    rewrite_round_log(cfg.results_dir / "rounds.jsonl", [record])
    resumed = build_engine(cfg)
    resumed.run(resume=True)
    for name, tensor in full.state.global_state.items():
        assert torch.equal(tensor, resumed.state.global_state[name]), name
    assert deterministic([r.to_json() for r in full.state.records]) == deterministic(
        [r.to_json() for r in resumed.state.records]
    )


def test_a_finished_run_continued_to_more_rounds_is_the_longer_run(tiny_config):
    """Resuming with only federation.num_rounds raised continues the run: rounds 1-4 are those of a run
    started with 4, even though the 2-round run evaluated its last round (round 2) where the 4-round one did not."""
    from fedranklite.run.engine import build_engine

    longer = tiny_config(federation={"num_rounds": 4}, evaluation={"eval_every": 3})
    full = build_engine(longer)
    full.run()
    shorter = tiny_config(federation={"num_rounds": 2}, evaluation={"eval_every": 3}, experiment_name="continued")
    build_engine(shorter).run()
    continued = build_engine(longer.model_copy(update={"experiment_name": "continued"}))
    continued.run(resume=True)
    for name, tensor in full.state.global_state.items():
        assert torch.equal(tensor, continued.state.global_state[name]), name
    got, want = (deterministic([r.to_json() for r in e.state.records]) for e in (continued, full))
    assert [r["round"] for r in got] == [1, 2, 3, 4]
    assert got[1]["score"] is not None and want[1]["score"] is None  # the short run's last-round evaluation
    assert got[0] == want[0] and got[2:] == want[2:]
    lines = (longer.results_dir.parent / "continued" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]  # appended, nothing doubled


def test_continuing_to_fewer_rounds_than_done_or_with_another_change_is_refused(tiny_config):
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.engine import build_engine

    build_engine(tiny_config(federation={"num_rounds": 3})).run()
    with pytest.raises(ResumeError, match=r"has 3 rounds done and federation.num_rounds is 2; resume with .* >= 3"):
        build_engine(tiny_config(federation={"num_rounds": 2})).run(resume=True)
    with pytest.raises(ResumeError, match=r"differing: federation.num_rounds, training.lr"):
        build_engine(tiny_config(federation={"num_rounds": 5}, training={"lr": 0.5})).run(resume=True)


def test_the_cli_continues_a_finished_run_to_more_rounds_and_refuses_fewer(tmp_path):
    path = write_config(tmp_path, "run", tmp_path / "out")
    first = cli_run("--config", str(path), "--set", "federation.num_rounds=2")
    assert first.returncode == 0, first.stderr
    fewer = cli_run("--config", str(path), "--resume", "--set", "federation.num_rounds=1")
    assert fewer.returncode == 2 and len(fewer.stderr.strip().splitlines()) == 1, fewer.stderr
    assert "has 2 rounds done and federation.num_rounds is 1" in fewer.stderr
    more = cli_run("--config", str(path), "--resume", "--set", "federation.num_rounds=3")
    assert more.returncode == 0, more.stderr
    metrics = json.loads((tmp_path / "out" / "run" / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "out" / "run" / CHECKPOINT_NAME)["round_idx"] == 3


# ---- a resume notices what changed beyond the config (fingerprint.py)
def _csv(path: Path, rows: int, flip: bool = False) -> Path:
    words = ["good", "bad", "fine", "awful", "great", "poor"]
    lines = ["text,label"] + [f"{words[i % 6]} film number {i},{(i % 2) ^ flip}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_resume_after_the_training_file_changed_is_refused_naming_it(tiny_config, tmp_path):
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.engine import build_engine

    train = _csv(tmp_path / "train.csv", 120)
    cfg = tiny_config(data={"source": "files", "train_file": str(train)}, federation={"num_rounds": 1})
    build_engine(cfg).run()
    _csv(train, 120, flip=True)  # same size, other labels
    longer = cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"num_rounds": 2})})
    with pytest.raises(ResumeError) as refused:
        build_engine(longer).run(resume=True)
    text = str(refused.value)
    assert "changed since the checkpoint: data (" in text and "train_file:" in text and "rows:" in text
    assert "--allow-changed data" in text and "\n" not in text
    assert load_checkpoint(cfg.results_dir / CHECKPOINT_NAME)["round_idx"] == 1  # nothing was written
    with pytest.raises(ResumeError, match="--allow-changed: unknown input 'dta'"):
        build_engine(longer).run(resume=True, allow_changed=["dta"])
    summary = build_engine(longer).run(resume=True, allow_changed=["data"])
    assert summary.rounds_completed == 2
    warnings = json.loads((cfg.results_dir / "metrics.json").read_text())["warnings"]
    assert any(w.startswith("resumed with changed inputs: data (") for w in warnings), warnings
    # the accepted change stays on record in later resumes' summaries, which now compare with the new file
    third = longer.model_copy(update={"federation": cfg.federation.model_copy(update={"num_rounds": 3})})
    build_engine(third).run(resume=True)
    warnings = json.loads((cfg.results_dir / "metrics.json").read_text())["warnings"]
    assert sum(w.startswith("resumed with changed inputs: data") for w in warnings) == 1


def test_resume_notices_a_changed_client_trace_and_package_version(tiny_config, tmp_path, monkeypatch):
    from fedranklite.run.checkpoint import ResumeError
    from fedranklite.run.engine import build_engine

    trace = tmp_path / "trace.csv"
    trace.write_text("cid,compute_factor\n0,1.0\n1,0.5\n2,0.25\n3,2.0\n")
    cfg = tiny_config(federation={"num_rounds": 1, "client_trace": str(trace)})
    build_engine(cfg).run()
    longer = cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"num_rounds": 2})})
    trace.write_text("cid,compute_factor\n0,1.0\n1,0.5\n2,0.25\n3,3.0\n")
    with pytest.raises(ResumeError, match=r"client_trace \(\d+ bytes, sha256 \w+ -> \d+ bytes, sha256"):
        build_engine(longer).run(resume=True)
    trace.write_text("cid,compute_factor\n0,1.0\n1,0.5\n2,0.25\n3,2.0\n")  # back as it was
    import fedranklite

    monkeypatch.setattr(fedranklite, "__version__", "99.0")
    with pytest.raises(ResumeError, match=r"package \(\S+ -> 99.0\)"):
        build_engine(longer).run(resume=True)
    monkeypatch.undo()
    assert build_engine(longer).run(resume=True).rounds_completed == 2
