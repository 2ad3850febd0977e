"""The run summary (summary.py) against hand-computed fixtures: fairness percentiles, time to target, and
summarize over hand-written round records (RoundRecord, read from the shape engine.Engine._record writes).

`fixture_records`, `FAIR` and `as_json` are also used by test_results_io.py and test_records.py."""

from __future__ import annotations

import json

import pytest

from fedranklite.core.records import SCHEMA_VERSION, RoundRecord, RunSummary, TimeToTarget
from fedranklite.core.results_io import json_ready, write_json_atomic
from fedranklite.run.summary import fairness, reached, summarize, time_to_target

approx = pytest.approx
NEVER = TimeToTarget(None, None)


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
    return {
        "cid": cid,
        "tier": "t",
        "rank": rank,
        "status": status,
        "straggler": straggler,
        "steps": 4,
        "planned_steps": 4,
        "samples": 64,
        "loss_before": loss,
        "loss_after": None if loss is None else loss / 2,
        "loss_drop": None if loss is None else loss / 2,
        "throughput": 10.0,
        "sim_throughput": 5.0,
        "wall_seconds": 1.0,
        "sim_seconds": 10.0,
        "bytes_down": down,
        "bytes_up": up,
        "peak_memory_mb": mem,
        "reject_reason": None,
    }


def record_json(r, clients, *, stragglers, round_sim, sim_time, score, fair, wall=2.0):
    """A round record as the full layout writes it (a list of client objects plus a ranks map)."""
    return {
        "round": r,
        "selected": [c["cid"] for c in clients],
        "ranks": {str(c["cid"]): c["rank"] for c in clients},
        "clients": clients,
        "out_of_memory": [],
        "rejected": {},
        "stragglers": stragglers,
        "compliant": not stragglers,
        "round_sim_seconds": round_sim,
        "sim_time": sim_time,
        "fairness": fair,
        "eval": None if score is None else {"score": score},
        "score": score,
        "bytes_up": sum(c["bytes_up"] for c in clients),
        "bytes_down": sum(c["bytes_down"] for c in clients),
        "wall_seconds": wall,
        "scheduler_notes": [],
    }


# per-round fairness of the loss_before values below, by hand (linear interpolation, position p/100*(n-1))
FAIR = [
    {"p10": 0.34, "p50": 0.9, "p90": 1.78},  # [0.2, 0.9, 2.0]: 0.2+.2*.7, 0.9, 0.9+.8*1.1
    {"p10": 1.2, "p50": 2.0, "p90": 2.8},  # [1.0, 3.0]
    {"p10": 0.5, "p50": 0.5, "p90": 0.5},  # [0.5] (the other client has no loss)
    {"p10": 0.61, "p50": 0.65, "p90": 0.69},  # [0.6, 0.7]
]
LOSSES = [[0.9, 0.2, 2.0], [1.0, 3.0], [0.5, None], [0.6, 0.7]]


def fixture_json(scores=(0.55, None, 0.81, 0.79)) -> list[dict]:
    return [
        record_json(
            1,
            [
                client(0, 8, 800, 1000, 100.0, 0.9),
                client(3, 4, 400, 600, 50.0, 0.2),
                client(12, 2, 200, 400, None, 2.0),
            ],
            stragglers=[],
            round_sim=30.0,
            sim_time=30.0,
            score=scores[0],
            fair=FAIR[0],
        ),
        record_json(
            2,
            [client(0, 6, 600, 1000, 120.0, 1.0), client(5, 10, 1000, 1000, 80.0, 3.0, straggler=True)],
            stragglers=[5],
            round_sim=90.0,
            sim_time=120.0,
            score=scores[1],
            fair=FAIR[1],
        ),
        record_json(
            3,
            [client(3, 4, 400, 600, 70.0, 0.5), client(12, 2, 0, 400, 30.0, None, straggler=True, status="dropped")],
            stragglers=[12],
            round_sim=90.0,
            sim_time=210.0,
            score=scores[2],
            fair=FAIR[2],
        ),
        record_json(
            4,
            [client(0, 8, 800, 1000, 90.0, 0.6), client(5, 8, 800, 1000, 150.0, 0.7)],
            stragglers=[],
            round_sim=45.0,
            sim_time=255.0,
            score=scores[3],
            fair=FAIR[3],
        ),
    ]


def fixture_records(scores=(0.55, None, 0.81, 0.79)) -> list[RoundRecord]:
    return [RoundRecord.from_json(d) for d in fixture_json(scores)]


def as_json(obj, layout: str = "full"):
    """What a record (or summary) looks like on disk: compares by content, NaN as null."""
    data = obj.to_json(layout) if isinstance(obj, RoundRecord) else obj.to_json()
    return json.loads(json.dumps(json_ready(data), allow_nan=False))


def test_fixture_records_are_typed_and_keep_the_hand_written_rows():
    recs = fixture_records()
    assert all(isinstance(r, RoundRecord) for r in recs)
    assert [r.ranks for r in recs] == [{0: 8, 3: 4, 12: 2}, {0: 6, 5: 10}, {3: 4, 12: 2}, {0: 8, 5: 8}]
    # the full layout gives back exactly the hand-written rows (no `lost` key: nobody was lost), plus the
    # optional rank_energy field the hand-written records leave out, and the format version (they have none)
    assert [as_json(r) for r in recs] == [
        {"schema_version": SCHEMA_VERSION, **d, "rank_energy": None} for d in fixture_json()
    ]


@pytest.mark.parametrize("i", range(4))
def test_fixture_fairness_matches_the_hand_values(i):
    got = fairness(LOSSES[i], [10, 50, 90])
    assert got == {k: approx(v) for k, v in FAIR[i].items()}
    # the same values, read from the record's loss_before column
    assert fairness(fixture_records()[i].clients.loss_before.tolist(), [10, 50, 90]) == got


# ================================================================== time to target
def test_time_to_target_higher_is_better():
    recs = fixture_records()
    assert time_to_target(recs, 0.8) == TimeToTarget(round=3, sim_seconds=210.0)
    assert time_to_target(recs, 0.5) == TimeToTarget(round=1, sim_seconds=30.0)
    assert time_to_target(recs, 0.81) == TimeToTarget(3, 210.0)  # reaching it exactly counts
    assert time_to_target(recs, 0.9) == NEVER
    assert time_to_target(recs, None) == NEVER
    assert time_to_target([], 0.5) == NEVER


def test_time_to_target_lower_is_better():
    recs = fixture_records(scores=(0.9, None, 0.5, 0.3))  # e.g. mse
    assert time_to_target(recs, 0.4, higher_is_better=False) == TimeToTarget(4, 255.0)
    assert time_to_target(recs, 0.5, higher_is_better=False) == TimeToTarget(3, 210.0)
    assert time_to_target(recs, 0.95, higher_is_better=False) == TimeToTarget(1, 30.0)
    assert time_to_target(recs, 0.1, higher_is_better=False) == NEVER
    # the same target read as higher-is-better is reached at once
    assert time_to_target(recs, 0.4) == TimeToTarget(1, 30.0)


def test_reached():
    assert reached(0.8, 0.8, True) and reached(0.9, 0.8, True) and not reached(0.7, 0.8, True)
    assert reached(0.8, 0.8, False) and reached(0.1, 0.8, False) and not reached(0.9, 0.8, False)
    assert not reached(None, 0.8, True)
    assert not reached(0.9, None, True)
    assert not reached(float("nan"), 0.8, True)
    assert not reached(float("nan"), 0.8, False)


# ================================================================== summarize
def test_summary_over_the_hand_written_records():
    s = summarize(fixture_records(), target=0.8, metric="accuracy")
    assert isinstance(s, RunSummary)
    assert s.rounds_completed == 4
    assert s.metric == "accuracy" and s.higher_is_better is True and s.target == 0.8
    assert s.final_score == 0.79  # the last evaluated round
    assert s.best_score == 0.81
    assert s.time_to_target == TimeToTarget(3, 210.0)
    assert s.sim_time_total == 255.0
    assert s.wall_time_total == approx(8.0)
    # 2 of the 4 rounds had no straggler
    assert s.deadline_compliance_pct == approx(50.0)
    assert s.stragglers_total == 2
    # 2 stragglers in 9 client participations
    assert s.client_compliance_pct == approx(100.0 * 7 / 9)
    # fairness: final round and the mean over rounds of each percentile
    assert s.fairness_final == FAIR[3]
    assert s.fairness_mean == {
        "p10": approx((0.34 + 1.2 + 0.5 + 0.61) / 4),
        "p50": approx((0.9 + 2.0 + 0.5 + 0.65) / 4),
        "p90": approx((1.78 + 2.8 + 0.5 + 0.69) / 4),
    }
    assert s.run == {}


def test_summary_bytes():
    b = summarize(fixture_records(), target=0.8, metric="accuracy").bytes
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
    assert s.peak_memory_mb == {"0": 120.0, "3": 70.0, "5": 150.0, "12": 30.0}
    assert list(s.peak_memory_mb) == ["0", "3", "5", "12"]


def test_summary_per_round_ranks_and_bytes():
    rounds = summarize(fixture_records(), target=0.8, metric="accuracy").rounds
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert [r["ranks"] for r in rounds] == [
        {"0": 8, "3": 4, "12": 2},
        {"0": 6, "5": 10},
        {"3": 4, "12": 2},
        {"0": 8, "5": 8},
    ]
    assert [r["score"] for r in rounds] == [0.55, None, 0.81, 0.79]
    assert [r["sim_time"] for r in rounds] == [30.0, 120.0, 210.0, 255.0]
    assert [r["round_sim_seconds"] for r in rounds] == [30.0, 90.0, 90.0, 45.0]
    assert [r["compliant"] for r in rounds] == [True, False, False, True]
    assert [r["stragglers"] for r in rounds] == [[], [5], [12], []]
    assert rounds[2]["bytes_up"] == {"3": 400, "12": 0}
    assert rounds[0]["bytes_down"] == {"0": 1000, "3": 600, "12": 400}
    assert rounds[1]["fairness"] == FAIR[1]


def test_summary_per_round_counts_without_per_client_maps():
    rounds = summarize(fixture_records(), target=0.8, metric="accuracy", per_client_maps=False).rounds
    assert [r["num_clients"] for r in rounds] == [3, 2, 2, 2]
    assert [r["stragglers"] for r in rounds] == [0, 1, 1, 0]  # counts instead of client ids
    assert [r["rank_mean"] for r in rounds] == [approx(14 / 3), approx(8.0), approx(3.0), approx(8.0)]
    assert [r["bytes_up"] for r in rounds] == [1400, 1600, 400, 1600]
    assert [r["bytes_down"] for r in rounds] == [2000, 2000, 1000, 2000]
    assert all("ranks" not in r for r in rounds)


def test_summary_lower_is_better():
    s = summarize(fixture_records(scores=(0.9, None, 0.5, 0.3)), target=0.4, metric="mse", higher_is_better=False)
    assert s.best_score == 0.3
    assert s.final_score == 0.3
    assert s.time_to_target == TimeToTarget(4, 255.0)


def test_summary_never_reached_and_run_fields():
    s = summarize(fixture_records(), target=0.95, metric="accuracy", run={"experiment_name": "x", "seed": 3})
    assert s.time_to_target == NEVER
    assert s.run == {"experiment_name": "x", "seed": 3}
    data = s.to_json()
    assert data["experiment_name"] == "x" and data["seed"] == 3
    # the format version comes first in metrics.json, then what the run was
    assert list(data)[:3] == ["schema_version", "experiment_name", "seed"]


def test_summary_ignores_a_nan_score_for_best():
    s = summarize(fixture_records(scores=(0.55, float("nan"), 0.81, 0.79)), target=0.8, metric="accuracy")
    assert s.best_score == 0.81
    assert s.time_to_target == TimeToTarget(3, 210.0)
    s = summarize(fixture_records(scores=(float("nan"), None, 0.4, 0.7)), target=0.8, metric="accuracy")
    assert s.best_score == 0.7


def test_summary_of_no_rounds():
    s = summarize([], target=0.8, metric="accuracy")
    assert s.rounds_completed == 0
    assert s.final_score is None and s.best_score is None
    assert s.deadline_compliance_pct is None and s.client_compliance_pct is None
    assert s.time_to_target == NEVER
    assert s.bytes["up_total"] == 0 and s.bytes["per_client"] == {}
    assert s.fairness_final is None and s.fairness_mean == {}
    assert s.rounds == [] and s.sim_time_total == 0.0


def test_summary_is_json_serialisable(tmp_path):
    s = summarize(fixture_records(), target=0.8, metric="accuracy", run={"experiment_name": "x"})
    write_json_atomic(tmp_path / "metrics.json", s)  # json_ready takes the dataclass through its to_json
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == as_json(s)
    assert on_disk["time_to_target"] == {"round": 3, "sim_seconds": 210.0}
    assert RunSummary.from_json(on_disk) == s
