"""Runs that cannot train (viability.py): refused before the first round where it can be known, stopped
with exit 3 after `stop_after_empty_rounds` rounds without an aggregated update, and nothing refused that
can train."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.config.files import validate
from fedranklite.core.records import ClientTable, RoundRecord
from fedranklite.run.checkpoint import CHECKPOINT_NAME
from fedranklite.run.engine import build_engine
from fedranklite.run.viability import (
    RunRefused,
    aggregated_nothing,
    deadline_problem,
    label_problem,
    memory_problem,
    stop_message,
)


def run_cli(tmp_path, capsys, *sets, rounds=6):
    tree = tiny_tree(tmp_path)
    tree["federation"]["num_rounds"] = rounds
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    args = ["run", "--config", str(cfg), "--quiet"] + [x for s in sets for x in ("--set", s)]
    code = cli.main(args)
    return code, capsys.readouterr().err, tmp_path / "results" / "tiny"


# ------------------------------------------------------------------ pure checks
def test_memory_problem_only_when_no_tier_holds_even_rank_1():
    assert memory_problem({"a": 0, "b": 2}, 2, 16, 64) is None
    assert memory_problem({"a": 0, "b": 1}, 2, 16, 64) is None  # below r_min, the scheduler assigns what fits
    msg = memory_problem({"a": 0, "b": 0}, 2, 16, 64)
    assert "no tier's memory_gb holds even rank 1" in msg and "a 0, b 0" in msg


def test_label_problem():
    assert "one class only" in label_problem(np.array([1, 1, 1]), 2, "accuracy", False)
    assert "f1 is binary F1" in label_problem(np.array([0, 1, 2]), 3, "f1", False)
    assert label_problem(np.array([0, 1, 2]), 3, "f1_macro", False) is None
    assert label_problem(np.array([0, 1]), 2, "f1", False) is None
    assert label_problem(np.array([0.5, 0.5]), 1, "pearson", True) is None  # regression: any targets


def _record(rnd: int, statuses: list[str], rejected: dict | None = None) -> RoundRecord:
    n = len(statuses)
    cols = {"cid": list(range(n)), "tier": ["t"] * n, "rank": [2] * n, "status": statuses}
    cols.update({k: [0] * n for k in ("straggler", "steps", "planned_steps", "samples", "bytes_down", "bytes_up")})
    floats = ("wall_seconds", "sim_seconds", "loss_before", "loss_after", "loss_drop", "throughput", "sim_throughput")
    cols.update({k: [0.0] * n for k in (*floats, "peak_memory_mb")})
    return RoundRecord(
        round=rnd,
        selected=list(range(n)),
        clients=ClientTable(cols),
        out_of_memory=[],
        rejected=rejected or {},
        stragglers=[],
        compliant=True,
        round_sim_seconds=1.0,
        sim_time=float(rnd),
        fairness={},
        eval=None,
        score=None,
        bytes_up=0,
        bytes_down=0,
        wall_seconds=0.0,
    )


def test_stop_message_needs_k_empty_rounds_in_a_row():
    bad = ["rejected", "dropped"]
    assert aggregated_nothing(bad) and aggregated_nothing(["dropped", "partial"]) is False
    assert aggregated_nothing(["lost", "lost"]) is None  # nobody answered: no evidence either way
    assert aggregated_nothing([]) is None  # every selected client out of memory: no evidence either
    assert aggregated_nothing(["dropped", "dropped", "lost"]) is None  # slow-only selections happen
    recs = [_record(1, bad), _record(2, ["accepted", "rejected"]), _record(3, bad), _record(4, bad)]
    assert stop_message(recs, 3) is None  # round 2 aggregated one update
    recs.append(_record(5, ["lost", "rejected"], {"1": "contains NaN or Inf"}))
    msg = stop_message(recs, 3)
    assert "3 rounds in a row (3-5" in msg and "1 lost, 1 rejected" in msg and "contains NaN or Inf" in msg
    assert stop_message(recs[:2], 3) is None


def test_rounds_without_evidence_neither_count_nor_break_a_streak():
    bad, gone = ["rejected", "dropped"], ["lost", "dropped"]
    recs = [_record(1, ["accepted"]), _record(2, bad), _record(3, gone), _record(4, gone), _record(5, bad)]
    assert stop_message(recs, 3) is None  # two informative empty rounds, two silent ones
    assert stop_message([*recs, _record(6, gone)], 3) is None  # a silent round never triggers the stop
    msg = stop_message([*recs, _record(6, bad)], 3)
    assert "3 rounds in a row (2-6" in msg


# ------------------------------------------------------------------ through the command line
def test_a_diverging_run_stops_with_exit_3_and_keeps_what_it_has(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    code, err, out = run_cli(tmp_path, capsys, "training.lr=1e30")
    assert code == 3, err
    assert "stopped after round 3: no client update was aggregated in 3 rounds in a row (1-3" in " ".join(err.split())
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["rounds"]) == 3 and summary["warnings"][0].startswith("stopped early")
    assert (out / CHECKPOINT_NAME).is_file() and len((out / "rounds.jsonl").read_text().splitlines()) == 3


def test_null_never_stops(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    code, err, out = run_cli(tmp_path, capsys, "training.lr=1e30", "federation.stop_after_empty_rounds=null", rounds=4)
    assert code == 0, err
    assert len(json.loads((out / "metrics.json").read_text())["rounds"]) == 4


@pytest.mark.parametrize(
    "sets,expect",
    [
        (["tiers.fast.memory_gb=0.000001", "tiers.slow.memory_gb=0.000001"], "no tier's memory_gb holds even rank 1"),
        (["deadline.seconds=0.01", "deadline.straggler_policy=use_partial"], "for one local step at rank 1"),
        (["deadline.seconds=0.3", "deadline.straggler_policy=drop"], "for its planned local steps at rank 1"),
        (["evaluation.metric=f1", "data.num_labels=3"], "evaluation.metric: f1 is binary F1"),
    ],
)
def test_refused_before_the_first_round(sets, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    code, err, out = run_cli(tmp_path, capsys, *sets)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and expect in " ".join(err.split()), err
    assert not (out / "rounds.jsonl").exists()
    assert len(lines) <= 3  # one message, wrapped by the console at most


def test_single_class_training_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    rows = "text,label\n" + "".join(f"a fine film {i},pos\n" for i in range(40))
    (tmp_path / "train.csv").write_text(rows)
    (tmp_path / "dev.csv").write_text("text,label\na fine film,pos\na bad film,neg\n")
    code, err, _ = run_cli(
        tmp_path,
        capsys,
        "data.source=files",
        f"data.train_file={tmp_path / 'train.csv'}",
        f"data.eval_file={tmp_path / 'dev.csv'}",
        "data.label_names=[neg, pos]",
    )
    assert code == 2 and "the training rows hold one class only" in " ".join(err.split()), err


def test_what_can_train_is_not_refused(tmp_path):
    # a deadline only the fast tier meets (the slow one at 0.25x cannot do one step), with use_partial
    tree = tiny_tree(tmp_path, deadline={"seconds": 0.9, "straggler_policy": "use_partial"})
    engine = build_engine(validate(tree))
    assert deadline_problem(engine) is None
    # the same deadline with `wait`: never refused (the round waits for everyone)
    tree = tiny_tree(tmp_path, deadline={"seconds": 0.001, "straggler_policy": "wait"})
    assert deadline_problem(build_engine(validate(tree))) is None


def test_jitter_gives_the_benefit_of_the_doubt(tmp_path):
    # one step at rank 1 takes 8 x 0.06 / 1.0 = 0.48 s on the fast tier (+ comm); with jitter sigma 0.5 a
    # lucky round is exp(-1.5) = 0.22x as long, so a 0.2 s deadline is not refused
    tree = tiny_tree(tmp_path, deadline={"seconds": 0.2, "straggler_policy": "use_partial"})
    with pytest.raises(RunRefused):
        build_engine(validate(tree))
    for tier in tree["tiers"].values():
        tier["jitter_sigma"] = 0.5
    assert deadline_problem(build_engine(validate(tree))) is None


def test_f1_on_a_three_class_config_is_a_config_error_before_loading(tmp_path):
    from fedranklite.config.schema import ConfigError

    with pytest.raises(ConfigError, match="f1 is binary F1"):
        validate(tiny_tree(tmp_path, evaluation={"metric": "f1"}, data={"num_labels": 3}))
    with pytest.raises(ConfigError, match="f1 is binary F1"):
        validate(tiny_tree(tmp_path, evaluation={"metric": "f1"}, data={"label_names": ["a", "b", "c"]}))
    validate(tiny_tree(tmp_path, evaluation={"metric": "f1_macro"}, data={"num_labels": 3}))
