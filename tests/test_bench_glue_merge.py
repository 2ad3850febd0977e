"""bench_glue --merge: runs done in parallel each write a whole copy of glue.json; the merge takes from each copy
only the rows it changed or added, so a copy's stale rows never overwrite another copy's new ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_glue import merge_copies  # noqa: E402


def _row(name: str, seed: int, score: float) -> dict:
    return {"experiment": name, "seed": seed, "final_score": score}


def _base() -> dict:
    return {"runs": [_row("a", 0, 0.5), _row("b", 0, 0.6)], "superseded": []}


def test_new_rows_of_two_copies_are_both_taken():
    one, two = _base(), _base()
    one["runs"].append(_row("c", 0, 0.7))
    two["runs"].append(_row("c", 1, 0.8))
    merged = merge_copies(_base(), [one, two])
    assert merged["runs"] == [_row("a", 0, 0.5), _row("b", 0, 0.6), _row("c", 0, 0.7), _row("c", 1, 0.8)]


def test_a_stale_copy_does_not_undo_another_copys_rerun():
    rerun, stale = _base(), _base()
    rerun["superseded"].append(rerun["runs"][1])
    rerun["runs"][1] = _row("b", 0, 0.9)
    for order in ([rerun, stale], [stale, rerun]):
        merged = merge_copies(_base(), order)
        assert merged["runs"] == [_row("a", 0, 0.5), _row("b", 0, 0.9)]  # in its old place
        assert merged["superseded"] == [_row("b", 0, 0.6)]


def test_merging_copies_one_at_a_time_does_not_bring_back_what_an_earlier_merge_replaced():
    rerun, other = _base(), _base()  # both started from the same file
    rerun["superseded"].append(rerun["runs"][1])
    rerun["runs"][1] = _row("b", 0, 0.9)
    other["runs"].append(_row("c", 0, 0.7))
    first = merge_copies(_base(), [rerun])
    merged = merge_copies(first, [other])  # `other` still holds b's old row, which `first` retired
    assert merged["runs"] == [_row("a", 0, 0.5), _row("b", 0, 0.9), _row("c", 0, 0.7)]
    assert merged["superseded"] == [_row("b", 0, 0.6)]


def test_a_copy_killed_mid_rerun_retires_nothing():
    killed = _base()
    killed["superseded"].append(killed["runs"].pop(1))  # moved aside, the rerun never finished
    merged = merge_copies(_base(), [killed])
    assert merged["runs"] == _base()["runs"] and merged["superseded"] == []


def test_disagreeing_copies_are_an_error():
    one, two = _base(), _base()
    one["runs"][0] = _row("a", 0, 0.1)
    two["runs"][0] = _row("a", 0, 0.2)
    with pytest.raises(ValueError, match="a seed 0"):
        merge_copies(_base(), [one, two])


def test_merge_cli_writes_json_and_md_and_refuses_bad_copies(tmp_path):
    out, copy, bad = tmp_path / "glue.json", tmp_path / "copy.json", tmp_path / "bad.json"
    recorded = json.loads((BENCH / "results" / "glue.json").read_text())  # a real file, so glue.md renders
    out.write_text(json.dumps(recorded))
    changed = json.loads(json.dumps(recorded))
    extra = dict(changed["runs"][0], seed=99, final_score=0.123)
    changed["runs"].append(extra)
    copy.write_text(json.dumps(changed))
    bad.write_text("{not json")
    not_results = tmp_path / "other.json"
    not_results.write_text(json.dumps({"runs": [{"score": 1}]}))

    def merge(*copies: Path) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(BENCH / "bench_glue.py"), "--out", str(out), "--merge", *map(str, copies)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    before = out.read_text()
    refused = merge(copy, bad)
    assert refused.returncode != 0 and "--merge" in refused.stderr and "Traceback" not in refused.stderr
    assert out.read_text() == before  # nothing written when any copy is unreadable
    wrong = merge(copy, not_results)
    assert wrong.returncode != 0 and "not a bench_glue results file" in wrong.stderr
    assert "Traceback" not in wrong.stderr and out.read_text() == before
    done = merge(copy)
    assert done.returncode == 0, done.stderr
    merged = json.loads(out.read_text())
    assert merged["runs"][-1] == extra and len(merged["runs"]) == len(recorded["runs"]) + 1
    assert out.with_suffix(".md").is_file()
