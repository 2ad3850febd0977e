"""Typed records (records.py): both client layouts read back to the same columns, the `lost` field, the
client table's checks, the run summary's JSON, read_run's errors, and the tracker scalars of a
columns-layout record."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from test_summary import as_json, fixture_records

from fedranklite.core.records import CLIENT_FIELDS, ClientReport, ClientTable, RoundRecord, RunSummary, TimeToTarget
from fedranklite.core.results_io import (
    ROUNDS_FILE,
    SUMMARY_FILE,
    ResultsError,
    RoundLog,
    json_ready,
    read_run,
    write_json_atomic,
)
from fedranklite.run.summary import summarize
from fedranklite.run.tracking import round_scalars

LAYOUTS = ["full", "columns"]


def report(cid, rank, loss, *, status="accepted", straggler=False, lost=None, reject_reason=None, mem=64.0):
    return ClientReport(
        cid=cid,
        tier="slow" if cid % 2 else "fast",
        rank=rank,
        status=status,
        straggler=straggler,
        steps=3,
        planned_steps=4,
        samples=48,
        loss_before=loss,
        loss_after=None if loss is None else loss - 0.25,
        loss_drop=None if loss is None else 0.25,
        throughput=12.5,
        sim_throughput=None if lost else 6.0,
        wall_seconds=0.5,
        sim_seconds=8.0,
        bytes_down=2048,
        bytes_up=0 if lost else 1024,
        peak_memory_mb=mem,
        reject_reason=reject_reason,
        lost=lost,
    )


def round_record(reports, **overrides) -> RoundRecord:
    table = ClientTable.from_reports(reports)
    values = dict(
        round=7,
        selected=[r.cid for r in reports] + [40],
        clients=table,
        out_of_memory=[40],
        rejected={str(r.cid): r.reject_reason for r in reports if r.reject_reason},
        stragglers=[r.cid for r in reports if r.straggler],
        compliant=not any(r.straggler for r in reports),
        round_sim_seconds=20.0,
        sim_time=140.0,
        fairness={"p50": 1.0},
        eval={"score": 0.7, "loss": 0.6},
        score=0.7,
        bytes_up=sum(r.bytes_up for r in reports),
        bytes_down=sum(r.bytes_down for r in reports),
        wall_seconds=1.5,
        scheduler_notes=["note"],
        rank_energy={"q": {"effective_rank": 2.0}},
    )
    values.update(overrides)
    return RoundRecord(**values)


REPORTS = [
    report(2, 8, 1.5),
    report(9, 4, None, status="lost", straggler=True, lost="timeout"),
    report(4, 2, 0.75, status="rejected", reject_reason="norm outlier", mem=float("nan")),
]


def through_json(rec: RoundRecord, layout: str) -> RoundRecord:
    """Written as rounds.jsonl writes it, read back as every reader reads it."""
    return RoundRecord.from_json(json.loads(json.dumps(json_ready(rec.to_json(layout)), allow_nan=False)))


# ================================================================== both layouts read back the same
@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_layouts_read_back_to_equal_columns_and_ranks(layout):
    rec = round_record(REPORTS)
    back = through_json(rec, layout)
    assert back.ranks == rec.ranks == {2: 8, 9: 4, 4: 2}  # written by hand: cid -> rank, int keys
    assert all(type(k) is int and type(v) is int for k, v in back.ranks.items())
    assert set(back.clients.columns) == set(CLIENT_FIELDS)
    for name in CLIENT_FIELDS:
        np.testing.assert_array_equal(back.clients.columns[name], rec.clients.columns[name], err_msg=name)
    assert (
        back.clients.rows()
        == rec.clients.rows()
        == [dataclasses.replace(r, peak_memory_mb=None) if r.cid == 4 else r for r in REPORTS]
    )
    assert back.clients.rank.dtype == np.int64 and back.clients.straggler.dtype == bool
    np.testing.assert_array_equal(back.clients.floats("loss_before"), [1.5, np.nan, 0.75])
    # the rest of the record comes back too
    for f in dataclasses.fields(RoundRecord):
        if f.name != "clients":
            assert getattr(back, f.name) == getattr(rec, f.name), f.name


def test_the_two_layouts_of_one_record_read_back_alike():
    rec = round_record(REPORTS)
    full, columns = through_json(rec, "full"), through_json(rec, "columns")
    assert full.ranks == columns.ranks
    assert full.clients.rows() == columns.clients.rows()
    assert as_json(full, "columns") == as_json(columns, "columns")
    assert as_json(full, "full") == as_json(columns, "full")


def test_fixture_records_in_both_layouts():
    for rec in fixture_records():
        full, columns = through_json(rec, "full"), through_json(rec, "columns")
        assert full.ranks == columns.ranks == rec.ranks
        assert full.clients.rows() == columns.clients.rows() == rec.clients.rows()


def test_client_table_iteration_and_columns():
    table = ClientTable.from_reports(REPORTS)
    assert len(table) == 3
    assert [r.cid for r in table] == [2, 9, 4]
    assert table.rank.tolist() == [8, 4, 2]
    assert table.tier.tolist() == ["fast", "slow", "fast"]
    np.testing.assert_array_equal(table.floats("peak_memory_mb"), [64.0, 64.0, np.nan])
    assert [r.peak_memory_mb for r in table.rows()] == [64.0, 64.0, None]  # NaN reads as missing
    with pytest.raises(AttributeError):
        table.no_such_column


# ================================================================== lost
def test_lost_is_a_real_field():
    assert "lost" in {f.name for f in dataclasses.fields(ClientReport)}
    assert ClientReport(**{**dataclasses.asdict(REPORTS[0]), "lost": "dead node"}).lost == "dead node"
    assert REPORTS[0].lost is None  # default: it answered


def test_lost_in_the_full_layout_only_when_set():
    rec = round_record(REPORTS)
    rows = json_ready(rec.to_json("full"))["clients"]
    assert ["lost" in row for row in rows] == [False, True, False]
    assert rows[1]["lost"] == "timeout" and rows[1]["status"] == "lost"
    assert rows[2]["reject_reason"] == "norm outlier"
    back = through_json(rec, "full")
    assert [r.lost for r in back.clients] == [None, "timeout", None]


def test_lost_in_the_columns_layout():
    rec = round_record(REPORTS)
    cols = json_ready(rec.to_json("columns"))["client_columns"]
    assert cols["lost"] == [None, "timeout", None]
    assert [r.lost for r in through_json(rec, "columns").clients] == [None, "timeout", None]


def test_nobody_lost_reads_back_as_none():
    rec = round_record([report(1, 4, 1.0), report(2, 2, 2.0)])
    for layout in LAYOUTS:
        assert [r.lost for r in through_json(rec, layout).clients] == [None, None]


# ================================================================== ClientTable checks
def test_client_table_rejects_missing_required_columns():
    full = {k: [getattr(r, k) for r in REPORTS] for k in CLIENT_FIELDS}
    with pytest.raises(ValueError, match="client columns missing: .*'rank'"):
        ClientTable({k: v for k, v in full.items() if k != "rank"})
    with pytest.raises(ValueError, match="'tier'.*'bytes_up'"):
        ClientTable({k: v for k, v in full.items() if k not in ("tier", "bytes_up")})
    with pytest.raises(ValueError, match="'cid'"):
        ClientTable({"rank": [1]})


def test_client_table_fills_the_optional_columns():
    full = {k: [getattr(r, k) for r in REPORTS] for k in CLIENT_FIELDS if k not in ("lost", "reject_reason")}
    table = ClientTable(full)  # e.g. a columns-layout record written before `lost` existed
    assert [r.lost for r in table] == [None, None, None]
    assert [r.reject_reason for r in table] == [None, None, None]


def test_a_columns_record_missing_a_required_column_is_rejected():
    data = json_ready(round_record(REPORTS).to_json("columns"))
    del data["client_columns"]["samples"]
    with pytest.raises(ValueError, match="'samples'"):
        RoundRecord.from_json(data)


def test_a_round_record_with_no_clients():
    rec = RoundRecord.from_json({**json_ready(round_record(REPORTS).to_json("full")), "clients": [], "ranks": {}})
    assert len(rec.clients) == 0 and rec.ranks == {}
    assert through_json(rec, "columns").ranks == {}


# ================================================================== RunSummary JSON
def test_run_summary_json_roundtrip_keeps_run_at_the_top_level():
    run = {"experiment_name": "lite_noniid", "scheduler": "lite", "budget": {"bytes": 10}, "final_eval": None}
    s = summarize(fixture_records(), target=0.8, metric="accuracy", run=run)
    data = s.to_json()
    assert "run" not in data
    assert {k: data[k] for k in run} == run
    assert list(data)[:5] == ["schema_version", *run]  # the format version first, then what the run was
    assert data["time_to_target"] == {"round": 3, "sim_seconds": 210.0}
    back = RunSummary.from_json(json.loads(json.dumps(json_ready(data), allow_nan=False)))
    assert back == s
    assert back.run == run
    assert back.time_to_target == TimeToTarget(3, 210.0)
    assert back.bytes["up_total"] == 5000


def test_run_summary_from_json_needs_the_summary_fields():
    with pytest.raises(ValueError, match="not a FedRankLite run summary: missing .*rounds_completed"):
        RunSummary.from_json({"experiment_name": "x"})


# ================================================================== read_run
def write_run(folder, layout="full"):
    s = summarize(fixture_records(), target=0.8, metric="accuracy", run={"experiment_name": "x"})
    write_json_atomic(folder / SUMMARY_FILE, s)
    with RoundLog(folder / ROUNDS_FILE, layout=layout) as log:
        for rec in fixture_records():
            log.write(rec)
    return s


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_run(tmp_path, layout):
    s = write_run(tmp_path, layout)
    summary, records = read_run(tmp_path)
    assert summary == s and summary.run == {"experiment_name": "x"}
    assert [r.round for r in records] == [1, 2, 3, 4]
    assert records[0].ranks == {0: 8, 3: 4, 12: 2}


def one_line_error(folder) -> str:
    with pytest.raises(ResultsError) as info:
        read_run(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_read_run_without_metrics_json(tmp_path):
    message = one_line_error(tmp_path)
    assert str(tmp_path / SUMMARY_FILE) in message and "not found" in message
    assert issubclass(ResultsError, FileNotFoundError)


@pytest.mark.parametrize(
    "text", ['{"rounds_completed": 4, "metr', "", "[1, 2]", '{"experiment_name": "x"}', "\xff\xfe not text"]
)
def test_read_run_with_a_corrupt_metrics_json(tmp_path, text):
    write_run(tmp_path)
    if text == "\xff\xfe not text":
        (tmp_path / SUMMARY_FILE).write_bytes(b"\xff\xfe not text")
    else:
        (tmp_path / SUMMARY_FILE).write_text(text)
    message = one_line_error(tmp_path)
    assert str(tmp_path / SUMMARY_FILE) in message and "cannot be read as a run summary" in message


def test_read_run_with_a_corrupt_round_log(tmp_path):
    write_run(tmp_path)
    (tmp_path / ROUNDS_FILE).write_text('{"round": 1, "client_columns": {"cid": [1]}}\n')
    message = one_line_error(tmp_path)
    assert str(tmp_path / ROUNDS_FILE) in message and "cannot be read as round records" in message


# ================================================================== tracking (regression)
def test_round_scalars_of_a_columns_layout_record():
    # a line of rounds.jsonl with metrics.client_records: columns has no `ranks` map (the old code raised
    # KeyError on record["ranks"])
    data = {
        "round": 3,
        "selected": [0, 5, 7, 9],
        "out_of_memory": [9],
        "rejected": {},
        "stragglers": [7],
        "compliant": False,
        "round_sim_seconds": 42.0,
        "sim_time": 126.0,
        "fairness": {"p10": 0.5, "p50": None},
        "eval": {"score": 0.8, "loss": 0.45},
        "score": 0.8,
        "bytes_up": 600,
        "bytes_down": 900,
        "wall_seconds": 3.0,
        "scheduler_notes": [],
        "client_columns": {
            "cid": [0, 5, 7],
            "tier": ["a", "a", "b"],
            "rank": [8, 2, 4],
            "status": ["accepted", "accepted", "partial"],
            "straggler": [False, False, True],
            "steps": [4, 4, 2],
            "planned_steps": [4, 4, 4],
            "samples": [32, 32, 16],
            "loss_before": [0.5, 0.7, None],
            "loss_after": [0.4, 0.6, None],
            "loss_drop": [0.1, 0.1, None],
            "throughput": [10.0, 10.0, 5.0],
            "sim_throughput": [8.0, 8.0, 2.0],
            "wall_seconds": [1.0, 1.0, 1.0],
            "sim_seconds": [10.0, 20.0, 42.0],
            "bytes_down": [300, 300, 300],
            "bytes_up": [300, 200, 100],
            "peak_memory_mb": [50.0, 60.0, 70.0],
            "reject_reason": [None, None, None],
        },
    }
    assert "ranks" not in data and "clients" not in data
    scalars = round_scalars(RoundRecord.from_json(data))
    assert scalars["rank_mean"] == pytest.approx(14 / 3)  # (8 + 2 + 4) / 3
    assert scalars["rank_min"] == 2 and scalars["rank_max"] == 8
    assert scalars["score"] == 0.8 and scalars["eval_loss"] == 0.45
    assert scalars["stragglers"] == 1 and scalars["compliant"] == 0.0
    assert scalars["client_loss_p10"] == 0.5 and "client_loss_p50" not in scalars
    assert (scalars["bytes_up"], scalars["bytes_down"], scalars["sim_time"]) == (600, 900, 126.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_scalars_agree_across_layouts(layout):
    rec = round_record(REPORTS)
    scalars = round_scalars(through_json(rec, layout))
    assert scalars == round_scalars(rec)
    assert scalars["rank_mean"] == pytest.approx(14 / 3) and scalars["rank_min"] == 2 and scalars["rank_max"] == 8
    json.dumps(scalars)  # plain Python numbers, as trackers want


def test_round_scalars_of_a_record_without_clients():
    rec = round_record([], eval=None, score=None)
    scalars = round_scalars(rec)
    assert not {"rank_mean", "rank_min", "rank_max", "score", "eval_loss"} & set(scalars)
