"""Metrics against hand-computed fixtures: score functions, fairness percentiles, time to target, the run
summary over hand-written round records (the shape engine.Engine._record produces), and safe writing."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from fedranklite import metrics
from fedranklite.metrics import (
    SCORE_METRICS,
    RoundLog,
    accuracy,
    average_ranks,
    default_metric,
    f1_binary,
    f1_macro,
    fairness,
    mse,
    pearson,
    reached,
    spearman,
    summarize,
    time_to_target,
    write_json_atomic,
)

approx = pytest.approx


# ================================================================== score functions
def test_accuracy():
    assert accuracy(np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 0, 1])) == approx(3 / 5)
    assert accuracy([1, 1], [1, 1]) == 1.0
    assert accuracy([0, 0], [1, 1]) == 0.0
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_f1_binary_is_the_f1_of_class_1():
    # tp = rows 0, 3; fp = row 1; fn = row 4  ->  2*2 / (2*2 + 1 + 1) = 4/6
    pred = np.array([1, 1, 0, 1, 0, 0])
    label = np.array([1, 0, 0, 1, 1, 0])
    assert f1_binary(pred, label) == approx(4 / 6)
    assert f1_binary(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert f1_binary(np.array([0, 0]), np.array([1, 1])) == 0.0  # no true positive
    assert f1_binary(np.array([0, 0]), np.array([0, 0])) == 0.0  # no positive anywhere


def test_f1_macro():
    pred = np.array([0, 0, 0, 0, 1, 2])
    label = np.array([0, 0, 1, 1, 1, 2])
    # class 0: tp 2 fp 2 fn 0 -> 4/6; class 1: tp 1 fp 0 fn 2 -> 2/4; class 2: tp 1 -> 1
    assert f1_macro(pred, label) == approx((4 / 6 + 2 / 4 + 1.0) / 3)
    # a class only ever predicted counts, with F1 0: classes 0 (1.0), 1 (0.0), 3 (0.0)
    assert f1_macro(np.array([0, 3]), np.array([0, 1])) == approx(1 / 3)


def test_pearson():
    # dx = [-1.5,-.5,.5,1.5], dy = [-3,-1,0,4]: sum dx dy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert pearson(np.array([1, 2, 3, 4]), np.array([2, 4, 5, 9])) == approx(11 / math.sqrt(5 * 26))
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == approx(-1.0)
    assert pearson(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0  # constant prediction
    assert pearson(np.array([1.0]), np.array([2.0])) == 0.0  # one point


def test_average_ranks_gives_ties_their_mean_rank():
    assert average_ranks(np.array([3, 1, 3, 2, 3])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks(np.array([0.5, 0.1, 0.9])).tolist() == [2.0, 1.0, 3.0]
    assert average_ranks(np.array([7, 7])).tolist() == [1.5, 1.5]
    assert average_ranks(np.array([])).tolist() == []


def test_spearman_with_ties():
    # ranks of pred: [1, 2.5, 2.5, 4, 5]; of label: [1, 3, 2, 5, 4]; both have mean 3
    # deviations [-2,-.5,-.5,1,2] and [-2,0,-1,2,1]: sum products 8.5, sums of squares 9.5 and 10
    pred = np.array([10, 20, 20, 30, 40])
    label = np.array([1, 3, 2, 5, 4])
    assert spearman(pred, label) == approx(8.5 / math.sqrt(9.5 * 10))
    # monotone but non-linear: spearman 1, pearson below 1
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x ** 3) == approx(1.0)
    assert pearson(x, x ** 3) < 0.99


def test_mse():
    assert mse(np.array([1, 2, 4]), np.array([1, 3, 2])) == approx(5 / 3)
    assert mse(np.array([0.5]), np.array([0.5])) == 0.0


def test_score_registry():
    assert set(SCORE_METRICS) == {"accuracy", "f1", "f1_macro", "pearson", "spearman", "mse"}
    tasks = {name: SCORE_METRICS[name].task for name in SCORE_METRICS}
    assert tasks == {"accuracy": "classification", "f1": "classification", "f1_macro": "classification",
                     "pearson": "regression", "spearman": "regression", "mse": "regression"}
    assert [n for n in SCORE_METRICS if not SCORE_METRICS[n].higher_is_better] == ["mse"]
    assert SCORE_METRICS["f1"].fn is f1_binary
    assert default_metric("classification") == "accuracy"
    assert default_metric("regression") == "pearson"
    with pytest.raises(KeyError, match="accuracy"):
        SCORE_METRICS["acc"]


# ================================================================== fairness percentiles
def test_fairness_linear_interpolation():
    # sorted [0.2, 0.4, 0.9, 1.3, 2.0]; position p/100 * 4
    losses = [1.3, 0.2, 2.0, None, 0.9, float("nan"), 0.4]  # None and NaN are ignored
    got = fairness(losses, [10, 50, 90])
    assert list(got) == ["p10", "p50", "p90"]
    assert got["p10"] == approx(0.2 + 0.4 * (0.4 - 0.2))  # position 0.4
    assert got["p50"] == approx(0.9)  # position 2
    assert got["p90"] == approx(1.3 + 0.6 * (2.0 - 1.3))  # position 3.6


def test_fairness_edges():
    assert fairness([1.0, 3.0], [0, 100, 25]) == {"p0": 1.0, "p100": 3.0, "p25": approx(1.5)}
    assert fairness([0.7], [10, 90]) == {"p10": 0.7, "p90": 0.7}
    assert fairness([], [10, 50]) == {"p10": None, "p50": None}
    assert fairness([None, float("inf")], [50]) == {"p50": None}
    assert list(fairness([1.0], [2.5, 97.5])) == ["p2.5", "p97.5"]
    assert list(fairness([1.0], [10.0])) == ["p10"]


# ================================================================== round records (engine shape)
def client(cid, rank, up, down, mem, loss, *, straggler=False, status="accepted"):
    return {"cid": cid, "tier": "t", "rank": rank, "status": status, "straggler": straggler, "steps": 4,
            "planned_steps": 4, "samples": 64, "loss_before": loss, "loss_after": None if loss is None else loss / 2,
            "loss_drop": None if loss is None else loss / 2, "throughput": 10.0, "sim_throughput": 5.0,
            "wall_seconds": 1.0, "sim_seconds": 10.0, "bytes_down": down, "bytes_up": up, "peak_memory_mb": mem}


def record(r, clients, *, stragglers, round_sim, sim_time, score, fair, wall=2.0):
    return {
        "round": r, "selected": [c["cid"] for c in clients], "ranks": {str(c["cid"]): c["rank"] for c in clients},
        "clients": clients, "out_of_memory": [], "stragglers": stragglers, "compliant": not stragglers,
        "round_sim_seconds": round_sim, "sim_time": sim_time, "fairness": fair,
        "eval": None if score is None else {"score": score}, "score": score,
        "bytes_up": sum(c["bytes_up"] for c in clients), "bytes_down": sum(c["bytes_down"] for c in clients),
        "wall_seconds": wall, "scheduler_notes": [],
    }


# per-round fairness of the loss_before values below, by hand (linear interpolation, position p/100*(n-1))
FAIR = [
    {"p10": 0.34, "p50": 0.9, "p90": 1.78},  # [0.2, 0.9, 2.0]: 0.2+.2*.7, 0.9, 0.9+.8*1.1
    {"p10": 1.2, "p50": 2.0, "p90": 2.8},  # [1.0, 3.0]
    {"p10": 0.5, "p50": 0.5, "p90": 0.5},  # [0.5] (the other client has no loss)
    {"p10": 0.61, "p50": 0.65, "p90": 0.69},  # [0.6, 0.7]
]
LOSSES = [[0.9, 0.2, 2.0], [1.0, 3.0], [0.5, None], [0.6, 0.7]]


def fixture_records(scores=(0.55, None, 0.81, 0.79)):
    return [
        record(1, [client(0, 8, 800, 1000, 100.0, 0.9), client(3, 4, 400, 600, 50.0, 0.2),
                   client(12, 2, 200, 400, None, 2.0)],
               stragglers=[], round_sim=30.0, sim_time=30.0, score=scores[0], fair=FAIR[0]),
        record(2, [client(0, 6, 600, 1000, 120.0, 1.0), client(5, 10, 1000, 1000, 80.0, 3.0, straggler=True)],
               stragglers=[5], round_sim=90.0, sim_time=120.0, score=scores[1], fair=FAIR[1]),
        record(3, [client(3, 4, 400, 600, 70.0, 0.5),
                   client(12, 2, 0, 400, 30.0, None, straggler=True, status="dropped")],
               stragglers=[12], round_sim=90.0, sim_time=210.0, score=scores[2], fair=FAIR[2]),
        record(4, [client(0, 8, 800, 1000, 90.0, 0.6), client(5, 8, 800, 1000, 150.0, 0.7)],
               stragglers=[], round_sim=45.0, sim_time=255.0, score=scores[3], fair=FAIR[3]),
    ]


@pytest.mark.parametrize("i", range(4))
def test_fixture_fairness_matches_the_hand_values(i):
    got = fairness(LOSSES[i], [10, 50, 90])
    assert got == {k: approx(v) for k, v in FAIR[i].items()}


def test_time_to_target_higher_is_better():
    recs = fixture_records()
    assert time_to_target(recs, 0.8) == {"round": 3, "sim_seconds": 210.0}
    assert time_to_target(recs, 0.5) == {"round": 1, "sim_seconds": 30.0}
    assert time_to_target(recs, 0.81) == {"round": 3, "sim_seconds": 210.0}  # reaching it exactly counts
    assert time_to_target(recs, 0.9) == {"round": None, "sim_seconds": None}
    assert time_to_target(recs, None) == {"round": None, "sim_seconds": None}
    assert time_to_target([], 0.5) == {"round": None, "sim_seconds": None}


def test_time_to_target_lower_is_better():
    recs = fixture_records(scores=(0.9, None, 0.5, 0.3))  # e.g. mse
    assert time_to_target(recs, 0.4, higher_is_better=False) == {"round": 4, "sim_seconds": 255.0}
    assert time_to_target(recs, 0.5, higher_is_better=False) == {"round": 3, "sim_seconds": 210.0}
    assert time_to_target(recs, 0.95, higher_is_better=False) == {"round": 1, "sim_seconds": 30.0}
    assert time_to_target(recs, 0.1, higher_is_better=False) == {"round": None, "sim_seconds": None}
    # the same target read as higher-is-better is reached at once
    assert time_to_target(recs, 0.4) == {"round": 1, "sim_seconds": 30.0}


def test_reached():
    assert reached(0.8, 0.8, True) and reached(0.9, 0.8, True) and not reached(0.7, 0.8, True)
    assert reached(0.8, 0.8, False) and reached(0.1, 0.8, False) and not reached(0.9, 0.8, False)
    assert not reached(None, 0.8, True)
    assert not reached(0.9, None, True)
    assert not reached(float("nan"), 0.8, True)
    assert not reached(float("nan"), 0.8, False)


def test_summary_over_the_hand_written_records():
    s = summarize(fixture_records(), target=0.8, metric="accuracy")
    assert s["rounds_completed"] == 4
    assert s["metric"] == "accuracy" and s["higher_is_better"] is True and s["target"] == 0.8
    assert s["final_score"] == 0.79  # the last evaluated round
    assert s["best_score"] == 0.81
    assert s["time_to_target"] == {"round": 3, "sim_seconds": 210.0}
    assert s["sim_time_total"] == 255.0
    assert s["wall_time_total"] == approx(8.0)
    # 2 of the 4 rounds had no straggler
    assert s["deadline_compliance_pct"] == approx(50.0)
    assert s["stragglers_total"] == 2
    # fairness: final round and the mean over rounds of each percentile
    assert s["fairness_final"] == FAIR[3]
    assert s["fairness_mean"] == {"p10": approx((0.34 + 1.2 + 0.5 + 0.61) / 4),
                                  "p50": approx((0.9 + 2.0 + 0.5 + 0.65) / 4),
                                  "p90": approx((1.78 + 2.8 + 0.5 + 0.69) / 4)}


def test_summary_bytes():
    b = summarize(fixture_records(), target=0.8, metric="accuracy")["bytes"]
    # up: 800+400+200 + 600+1000 + 400+0 + 800+800; down: 1000+600+400 + 1000+1000 + 600+400 + 1000+1000
    assert b["up_total"] == 5000
    assert b["down_total"] == 7000
    # 9 client participations over the 4 rounds
    assert b["up_per_client_per_round"] == approx(5000 / 9)
    assert b["down_per_client_per_round"] == approx(7000 / 9)
    assert b["per_client"] == {
        "0": {"up": 800 + 600 + 800, "down": 3000, "rounds": 3},
        "3": {"up": 800, "down": 1200, "rounds": 2},
        "5": {"up": 1800, "down": 2000, "rounds": 2},
        "12": {"up": 200, "down": 800, "rounds": 2},
    }
    assert list(b["per_client"]) == ["0", "3", "5", "12"]  # numeric order, not "0", "12", "3", "5"


def test_summary_peak_memory_per_client():
    s = summarize(fixture_records(), target=0.8, metric="accuracy")
    assert s["peak_memory_mb"] == {"0": 120.0, "3": 70.0, "5": 150.0, "12": 30.0}
    assert list(s["peak_memory_mb"]) == ["0", "3", "5", "12"]


def test_summary_per_round_ranks_and_bytes():
    rounds = summarize(fixture_records(), target=0.8, metric="accuracy")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert [r["ranks"] for r in rounds] == [{"0": 8, "3": 4, "12": 2}, {"0": 6, "5": 10}, {"3": 4, "12": 2},
                                            {"0": 8, "5": 8}]
    assert [r["score"] for r in rounds] == [0.55, None, 0.81, 0.79]
    assert [r["sim_time"] for r in rounds] == [30.0, 120.0, 210.0, 255.0]
    assert [r["round_sim_seconds"] for r in rounds] == [30.0, 90.0, 90.0, 45.0]
    assert [r["compliant"] for r in rounds] == [True, False, False, True]
    assert [r["stragglers"] for r in rounds] == [[], [5], [12], []]
    assert rounds[2]["bytes_up"] == {"3": 400, "12": 0}
    assert rounds[0]["bytes_down"] == {"0": 1000, "3": 600, "12": 400}
    assert rounds[1]["fairness"] == FAIR[1]


def test_summary_lower_is_better():
    s = summarize(fixture_records(scores=(0.9, None, 0.5, 0.3)), target=0.4, metric="mse", higher_is_better=False)
    assert s["best_score"] == 0.3
    assert s["final_score"] == 0.3
    assert s["time_to_target"] == {"round": 4, "sim_seconds": 255.0}


def test_summary_never_reached_and_extra_fields():
    s = summarize(fixture_records(), target=0.95, metric="accuracy", extra={"experiment_name": "x", "seed": 3})
    assert s["time_to_target"] == {"round": None, "sim_seconds": None}
    assert s["experiment_name"] == "x" and s["seed"] == 3
    assert list(s)[:2] == ["experiment_name", "seed"]


def test_summary_ignores_a_nan_score_for_best():
    s = summarize(fixture_records(scores=(0.55, float("nan"), 0.81, 0.79)), target=0.8, metric="accuracy")
    assert s["best_score"] == 0.81
    assert s["time_to_target"] == {"round": 3, "sim_seconds": 210.0}
    s = summarize(fixture_records(scores=(float("nan"), None, 0.4, 0.7)), target=0.8, metric="accuracy")
    assert s["best_score"] == 0.7


def test_summary_of_no_rounds():
    s = summarize([], target=0.8, metric="accuracy")
    assert s["rounds_completed"] == 0
    assert s["final_score"] is None and s["best_score"] is None
    assert s["deadline_compliance_pct"] is None
    assert s["time_to_target"] == {"round": None, "sim_seconds": None}
    assert s["bytes"]["up_total"] == 0 and s["bytes"]["per_client"] == {}
    assert s["fairness_final"] is None and s["fairness_mean"] == {}


def test_summary_is_json_serialisable(tmp_path):
    s = summarize(fixture_records(), target=0.8, metric="accuracy")
    write_json_atomic(tmp_path / "metrics.json", s)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(s))


# ================================================================== write_json_atomic
def strict_json(text: str):
    def bad(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=bad)


def test_write_json_atomic_writes_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "deeper" / "metrics.json"  # folders are created
    write_json_atomic(target, {"a": 1, "b": [1, 2]})
    write_json_atomic(target, {"a": 2})  # replaces
    assert strict_json(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_write_json_atomic_numpy_and_non_finite_values(tmp_path):
    target = tmp_path / "m.json"
    write_json_atomic(target, {"i": np.int64(3), "f": np.float32(0.5), "arr": np.array([1, 2]),
                               "nan": float("nan"), "inf": np.float64("inf"), "nested": [{"x": float("-inf")}],
                               "tuple": (1, 2), "path": Path("a/b"), "flag": np.bool_(True)})
    assert strict_json(target.read_text()) == {"i": 3, "f": 0.5, "arr": [1, 2], "nan": None, "inf": None,
                                               "nested": [{"x": None}], "tuple": [1, 2], "path": "a/b",
                                               "flag": True}


def test_write_json_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"round": 1})
    # not serialisable: fails, the old file is intact, no temp file stays behind
    with pytest.raises(TypeError):
        write_json_atomic(target, {"round": 2, "bad": object()})
    assert strict_json(target.read_text()) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    # a crash at the rename: the old file is intact, the temporary is removed
    def crash(src, dst):
        assert Path(src).parent == target.parent  # the temporary sits next to the target (same filesystem)
        assert strict_json(Path(src).read_text()) == {"round": 3}  # fully written before the rename
        raise OSError("disk gone")

    monkeypatch.setattr(metrics.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"round": 3})
    assert strict_json(target.read_text()) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_json_atomic_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# ================================================================== RoundLog
def test_round_log_roundtrip_and_flush(tmp_path):
    path = tmp_path / "res" / "rounds.jsonl"
    log = RoundLog(path)
    recs = fixture_records()
    for rec in recs[:2]:
        log.write(rec)
    assert RoundLog.read(path) == recs[:2]  # readable while the run goes on
    for rec in recs[2:]:
        log.write(rec)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4]
    assert RoundLog.read(path) == recs


def test_round_log_nan_and_numpy(tmp_path):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path) as log:
        log.write({"round": np.int64(1), "score": float("nan"), "ranks": np.array([2, 4])})
    assert strict_json(path.read_text()) == {"round": 1, "score": None, "ranks": [2, 4]}


def test_round_log_read_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path) as log:
        log.write({"round": 1})
        log.write({"round": 2})
    with open(path, "a") as fh:
        fh.write('{"round": 3, "sco')  # crash mid-write
    assert RoundLog.read(path) == [{"round": 1}, {"round": 2}]


def test_round_log_append_after_a_torn_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path) as log:
        log.write({"round": 1})
    with open(path, "a") as fh:
        fh.write('{"round": 2, "sco')
    with RoundLog(path, append=True) as log:  # resume: the torn record is dropped, not glued to the next
        log.write({"round": 2})
        log.write({"round": 3})
    assert RoundLog.read(path) == [{"round": 1}, {"round": 2}, {"round": 3}]
    assert path.read_text().count("\n") == 3


def test_round_log_append_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 1}\n{"round": 2}')
    with RoundLog(path, append=True) as log:
        log.write({"round": 3})
    assert RoundLog.read(path) == [{"round": 1}, {"round": 2}, {"round": 3}]


def test_round_log_append_to_a_file_that_is_only_a_torn_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"rou')
    with RoundLog(path, append=True) as log:
        log.write({"round": 1})
    assert path.read_text() == '{"round": 1}\n'


def test_round_log_without_append_starts_over(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 9}\n')
    with RoundLog(path) as log:
        log.write({"round": 1})
    assert RoundLog.read(path) == [{"round": 1}]


def test_round_log_read_of_a_missing_or_empty_file(tmp_path):
    assert RoundLog.read(tmp_path / "absent.jsonl") == []
    (tmp_path / "empty.jsonl").write_text("")
    assert RoundLog.read(tmp_path / "empty.jsonl") == []


def test_summary_recomputed_from_rounds_jsonl(tmp_path):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path) as log:
        for rec in fixture_records():
            log.write(rec)
    again = summarize(RoundLog.read(path), target=0.8, metric="accuracy")
    assert again == summarize(fixture_records(), target=0.8, metric="accuracy")
