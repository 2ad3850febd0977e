"""Results on disk (results_io.py): atomic writes, json_ready, the round log in both client layouts, and
the summary recomputed from rounds.jsonl."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_summary import as_json, fixture_records

from fedranklite.core.records import ClientTable, RoundRecord, TimeToTarget
from fedranklite.core.results_io import (
    ROUNDS_FILE,
    SUMMARY_FILE,
    RoundLog,
    json_ready,
    rewrite_round_log,
    write_json_atomic,
    write_text_atomic,
)
from fedranklite.run.summary import summarize

LAYOUTS = ["full", "columns"]


def strict_json(text: str):
    def bad(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=bad)


def line(rec: RoundRecord, layout: str = "full") -> str:
    """A record as one rounds.jsonl line."""
    return json.dumps(json_ready(rec.to_json(layout)), allow_nan=False) + "\n"


def rounds_of(path) -> list[int]:
    return [rec.round for rec in RoundLog.read(path)]


def test_file_names():
    assert ROUNDS_FILE == "rounds.jsonl"
    assert SUMMARY_FILE == "metrics.json"


# ================================================================== write_json_atomic
def test_write_json_atomic_writes_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "deeper" / "metrics.json"  # folders are created
    write_json_atomic(target, {"a": 1, "b": [1, 2]})
    write_json_atomic(target, {"a": 2})  # replaces
    assert strict_json(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_write_text_atomic(tmp_path):
    target = tmp_path / "sub" / "notes.txt"
    write_text_atomic(target, "one\n")
    write_text_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["notes.txt"]


def test_write_json_atomic_numpy_and_non_finite_values(tmp_path):
    target = tmp_path / "m.json"
    write_json_atomic(
        target,
        {
            "i": np.int64(3),
            "f": np.float32(0.5),
            "arr": np.array([1, 2]),
            "nan": float("nan"),
            "inf": np.float64("inf"),
            "nested": [{"x": float("-inf")}],
            "tuple": (1, 2),
            "path": Path("a/b"),
            "flag": np.bool_(True),
        },
    )
    assert strict_json(target.read_text()) == {
        "i": 3,
        "f": 0.5,
        "arr": [1, 2],
        "nan": None,
        "inf": None,
        "nested": [{"x": None}],
        "tuple": [1, 2],
        "path": "a/b",
        "flag": True,
    }


def test_json_ready_handles_dataclasses():
    # one without to_json: its fields; one with: its to_json (here the run summary, `run` at the top level)
    assert json_ready({"t": TimeToTarget(np.int64(3), float("nan"))}) == {"t": {"round": 3, "sim_seconds": None}}
    s = summarize(fixture_records(), target=0.8, metric="accuracy", run={"experiment_name": "x"})
    ready = json_ready(s)
    assert ready["experiment_name"] == "x" and "run" not in ready
    assert ready["time_to_target"] == {"round": 3, "sim_seconds": 210.0}
    with pytest.raises(TypeError, match="object"):
        json_ready({"bad": object()})


def test_write_json_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"round": 1})
    # not serialisable: fails, the old file is intact, no temp file stays behind
    with pytest.raises(TypeError):
        write_json_atomic(target, {"round": 2, "bad": object()})
    assert strict_json(target.read_text()) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    # a crash at the rename: the old file is intact, the temporary is removed
    calls = []

    def crash(src, dst):
        calls.append(dst)
        assert Path(src).parent == target.parent  # the temporary sits next to the target (same filesystem)
        assert strict_json(Path(src).read_text()) == {"round": 3}  # fully written before the rename
        raise OSError("disk gone")

    monkeypatch.setattr("fedranklite.core.results_io.os.replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"round": 3})
    assert calls == [target]  # the crash really happened at the rename
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
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_log_roundtrip_and_flush(tmp_path, layout):
    path = tmp_path / "res" / "rounds.jsonl"
    log = RoundLog(path, layout=layout)
    recs = fixture_records()
    for rec in recs[:2]:
        log.write(rec)
    got = RoundLog.read(path)  # readable while the run goes on
    assert all(isinstance(r, RoundRecord) for r in got)
    assert [as_json(r) for r in got] == [as_json(r) for r in recs[:2]]
    for rec in recs[2:]:
        log.write(rec)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]
    # the layout decides the shape on disk
    raw = RoundLog.read_json(path)
    assert all(("client_columns" in d) == (layout == "columns") for d in raw)
    assert all(("clients" in d and "ranks" in d) == (layout == "full") for d in raw)
    got = RoundLog.read(path)
    assert [as_json(r) for r in got] == [as_json(r) for r in recs]
    assert [r.ranks for r in got] == [{0: 8, 3: 4, 12: 2}, {0: 6, 5: 10}, {3: 4, 12: 2}, {0: 8, 5: 8}]


def test_round_log_columns_layout_on_disk(tmp_path):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path, layout="columns") as log:
        log.write(fixture_records()[2])
    (raw,) = RoundLog.read_json(path)
    cols = raw["client_columns"]
    assert cols["cid"] == [3, 12] and cols["rank"] == [4, 2]
    assert cols["loss_before"] == [0.5, None]  # NaN (missing) as null
    assert cols["status"] == ["accepted", "dropped"] and cols["straggler"] == [False, True]
    assert cols["lost"] == [None, None]
    assert "ranks" not in raw and "clients" not in raw


def test_round_log_rejects_an_unknown_layout(tmp_path):
    with RoundLog(tmp_path / "rounds.jsonl", layout="rows") as log:
        with pytest.raises(ValueError, match="unknown client record layout 'rows'"):
            log.write(fixture_records()[0])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_log_nan_and_numpy(tmp_path, layout):
    rec = fixture_records()[0]
    cols = dict(rec.clients.columns)
    cols["rank"] = np.array([8, 4, 2], dtype=np.int32)
    cols["loss_after"] = np.array([0.45, np.nan, np.float32(1.0)])
    rec = dataclasses.replace(
        rec,
        round=np.int64(1),
        score=float("nan"),
        eval={"score": np.float32(0.5)},
        sim_time=np.float64(30.0),
        clients=ClientTable(cols),
    )
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path, layout=layout) as log:
        log.write(rec)
    data = strict_json(path.read_text())
    assert data["round"] == 1 and data["score"] is None and data["eval"] == {"score": 0.5}
    assert data["sim_time"] == 30.0
    if layout == "full":
        assert data["ranks"] == {"0": 8, "3": 4, "12": 2}
        assert [c["loss_after"] for c in data["clients"]] == [0.45, None, 1.0]
    else:
        assert data["client_columns"]["rank"] == [8, 4, 2]
        assert data["client_columns"]["loss_after"] == [0.45, None, 1.0]


def test_round_log_read_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    with RoundLog(path) as log:
        log.write(recs[0])
        log.write(recs[1])
    with open(path, "a") as fh:
        fh.write(line(recs[2])[:40])  # crash mid-write
    assert rounds_of(path) == [1, 2]
    assert [d["round"] for d in RoundLog.read_json(path)] == [1, 2]


def test_round_log_append_after_a_torn_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    with RoundLog(path) as log:
        log.write(recs[0])
    with open(path, "a") as fh:
        fh.write(line(recs[1])[:40])
    with RoundLog(path, append=True) as log:  # resume: the torn record is dropped, not glued to the next
        log.write(recs[1])
        log.write(recs[2])
    assert rounds_of(path) == [1, 2, 3]
    assert path.read_text().count("\n") == 3


def test_round_log_append_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    path.write_text(line(recs[0]) + line(recs[1]).rstrip("\n"))
    with RoundLog(path, append=True) as log:
        log.write(recs[2])
    assert rounds_of(path) == [1, 2, 3]


def test_round_log_append_to_a_file_that_is_only_a_torn_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    rec = fixture_records()[0]
    path.write_text('{"rou')
    with RoundLog(path, append=True) as log:
        log.write(rec)
    assert path.read_text() == line(rec)


def test_round_log_without_append_starts_over(tmp_path):
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    path.write_text(line(recs[3]))
    with RoundLog(path) as log:
        log.write(recs[0])
    assert rounds_of(path) == [1]


def test_round_log_read_of_a_missing_or_empty_file(tmp_path):
    assert RoundLog.read(tmp_path / "absent.jsonl") == []
    assert RoundLog.read_json(tmp_path / "absent.jsonl") == []
    (tmp_path / "empty.jsonl").write_text("")
    assert RoundLog.read(tmp_path / "empty.jsonl") == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rewrite_round_log_replaces_the_file(tmp_path, layout):
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    with RoundLog(path) as log:
        for rec in recs:
            log.write(rec)
    rewrite_round_log(path, recs[:2], layout)  # resuming from the checkpoint after round 2
    assert path.read_text() == line(recs[0], layout) + line(recs[1], layout)
    assert rounds_of(path) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["rounds.jsonl"]


# ================================================================== summary from the round log
@pytest.mark.parametrize("layout", LAYOUTS)
def test_summary_recomputed_from_rounds_jsonl(tmp_path, layout):
    path = tmp_path / "rounds.jsonl"
    with RoundLog(path, layout=layout) as log:
        for rec in fixture_records():
            log.write(rec)
    again = summarize(RoundLog.read(path), target=0.8, metric="accuracy")
    in_memory = summarize(fixture_records(), target=0.8, metric="accuracy")
    assert again == in_memory
    assert again.to_json() == in_memory.to_json()
    assert again.bytes["up_total"] == 5000 and again.time_to_target == TimeToTarget(3, 210.0)


def test_a_round_line_is_one_write_and_a_short_write_is_cut_back(tmp_path, monkeypatch):
    """Each line reaches the file in one os.write; when the disk takes only part of it, the file is cut back to
    its last whole line and the error is raised (the run stops in one line, resumable)."""
    path = tmp_path / "rounds.jsonl"
    recs = fixture_records()
    real_write, calls = os.write, []

    def counting(fd, data):
        calls.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    with RoundLog(path) as log:
        log.write(recs[0])
    assert calls == [len(line(recs[0]).encode())]

    def half(fd, data):  # a disk that fills up mid-line
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    with RoundLog(path, append=True) as log, pytest.raises(OSError, match="only"):
        log.write(recs[1])
    assert path.read_text() == line(recs[0])  # no torn half line left behind
