"""bench_slm_budget's --continue-from: a candidate at more rounds starts from its own finished shorter run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "experiments" / "slm_budget"))

from bench_slm_budget import start_from  # noqa: E402

from fedranklite.run.checkpoint import CHECKPOINT_NAME  # noqa: E402


def fail(message):
    raise SystemExit(message)


@pytest.mark.parametrize("centralized", [False, True], ids=["federated", "centralized"])
def test_a_continued_candidate_is_the_longer_run_and_keeps_the_shorter_one(tiny_config, centralized):
    from fedranklite.run.centralized import centralized_config
    from fedranklite.run.engine import build_engine

    # a centralized reference (bench_slm_budget without --federated) is continued the same way: its own
    # _centralized folders, one client training the federation's steps of a round
    as_run = centralized_config if centralized else (lambda cfg: cfg)
    short = as_run(tiny_config(experiment_name="c_r2", federation={"num_rounds": 2}))
    long = as_run(tiny_config(experiment_name="c_r3", federation={"num_rounds": 3}))
    assert short.results_dir.name.endswith("_centralized") == centralized
    build_engine(short).run()
    fresh = build_engine(as_run(tiny_config(experiment_name="fresh_r3", federation={"num_rounds": 3})))
    fresh.run()

    start_from(short, long, fail)
    continued = build_engine(long)
    continued.run(resume=True)
    assert [r.round for r in continued.state.records] == [1, 2, 3]
    for name, tensor in fresh.state.global_state.items():
        assert torch.equal(tensor, continued.state.global_state[name]), name
    assert (short.results_dir / CHECKPOINT_NAME).is_file()  # the shorter run stays as it was
    assert not list(long.results_dir.parent.glob("*.copying"))
    start_from(short, long, fail)  # a continuation already there is left alone (resumed, not copied over)
    assert len((long.results_dir / "rounds.jsonl").read_text().splitlines()) == 3


def test_an_unfinished_or_other_shorter_run_or_an_occupied_folder_is_one_clear_error(tiny_config):
    from fedranklite.run.engine import build_engine

    short = tiny_config(experiment_name="c_r2", federation={"num_rounds": 2})
    long = tiny_config(experiment_name="c_r3", federation={"num_rounds": 3})
    with pytest.raises(SystemExit, match=r"c_r2: 0 of 2 rounds done; finish it"):
        start_from(short, long, fail)
    build_engine(short).run()
    other = tiny_config(experiment_name="c_r3", federation={"num_rounds": 3}, training={"lr": 0.5})
    message = r"--continue-from: .*c_r2/checkpoint.safetensors: .*differing: federation.num_rounds, training.lr\)"
    with pytest.raises(SystemExit, match=message):
        start_from(short, other, fail)  # e.g. a --set value left out: the continuation would not be this run
    assert not other.results_dir.exists()
    long.results_dir.mkdir(parents=True)
    (long.results_dir / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"c_r3 exists without a checkpoint; move it away"):
        start_from(short, long, fail)
    assert (long.results_dir / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("rounds, start", [(20, 20), (20, 40), (20, 0)])
def test_continue_from_must_be_fewer_rounds_than_the_candidate(tmp_path, rounds, start):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "slm_budget" / "bench_slm_budget.py"),
        "--task",
        "rte",
        "--lr",
        "1e-3",
    ]
    cmd += ["--rounds", str(rounds), "--continue-from", str(start), "--out", str(tmp_path / "x.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--continue-from: {start}: fewer rounds than --rounds ({rounds})" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.json").exists()
