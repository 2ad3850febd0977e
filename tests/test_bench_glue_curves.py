"""glue.json rows carry their per-round curve; the backfill takes it from a run folder only while that folder
still holds the recorded run (same final score and wall time), never from a run that replaced it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_glue import backfill_curves, curve  # noqa: E402


def _round(n: int, score=None) -> dict:
    ev = None if score is None else {"score": score, "f1": score, "accuracy": score - 0.1, "loss": 0.6}
    return {"round": n, "sim_time": 10.0 * n, "eval": ev, "clients": [{"cid": 0}]}


def _folder(root: Path, seed: int, name: str, final: float, wall: float, rounds: list[dict]) -> None:
    folder = root / f"seed{seed}" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"final_score": final, "wall_time_total": wall}))
    (folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))


def test_curve_keeps_evaluated_rounds_only():
    out = curve([_round(1), _round(2, 0.7), _round(3), _round(4, 0.8)])
    assert [c["round"] for c in out] == [2, 4]
    assert out[1] == {"round": 4, "sim_time": 40.0, "score": 0.8, "f1": 0.8, "accuracy": 0.8 - 0.1, "loss": 0.6}


def test_backfill_only_from_the_recorded_run(tmp_path):
    rounds = [_round(1), _round(2, 0.55), _round(3, 0.61)]
    _folder(tmp_path, 0, "same", 0.61, 100.0, rounds)
    _folder(tmp_path, 0, "rerun", 0.70, 100.0, rounds)  # the folder now holds another run
    _folder(tmp_path, 1, "other_wall", 0.61, 999.0, rounds)
    results = {
        "runs": [
            {"experiment": "same", "seed": 0, "final_score": 0.61, "wall_time_total": 100.0},
            {"experiment": "rerun", "seed": 0, "final_score": 0.61, "wall_time_total": 100.0},
            {"experiment": "other_wall", "seed": 1, "final_score": 0.61, "wall_time_total": 100.0},
            {"experiment": "gone", "seed": 0, "final_score": 0.61, "wall_time_total": 100.0},
            {"experiment": "same", "seed": 0, "final_score": 0.61, "wall_time_total": 100.0, "curve": ["kept"]},
        ],
        "superseded": [{"experiment": "same", "seed": 0, "final_score": 0.5, "wall_time_total": 1.0}],
    }
    assert backfill_curves(results, tmp_path) == 1
    filled, rerun, other, gone, kept = results["runs"]
    assert [c["score"] for c in filled["curve"]] == [0.55, 0.61]
    assert "curve" not in rerun and "curve" not in other and "curve" not in gone
    assert kept["curve"] == ["kept"]
    assert "curve" not in results["superseded"][0]


def test_broken_folder_is_skipped(tmp_path):
    folder = tmp_path / "seed0" / "x"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{not json")
    (folder / "rounds.jsonl").write_text("")
    results = {"runs": [{"experiment": "x", "seed": 0, "final_score": 0.1, "wall_time_total": 1.0}]}
    assert backfill_curves(results, tmp_path) == 0


def test_damaged_round_log_gives_no_curve(tmp_path):
    _folder(tmp_path, 0, "x", 0.61, 100.0, [_round(1, 0.61)])
    log = tmp_path / "seed0" / "x" / "rounds.jsonl"
    log.write_text(log.read_text() + '{"round": 2, "eval"\n')  # a line cut short
    results = {"runs": [{"experiment": "x", "seed": 0, "final_score": 0.61, "wall_time_total": 100.0}]}
    assert backfill_curves(results, tmp_path) == 0
    assert "curve" not in results["runs"][0]


def test_backfill_cli_refuses_a_file_that_is_not_results(tmp_path):
    import subprocess

    out = tmp_path / "glue.json"
    out.write_text(json.dumps({"runs": "none"}))
    argv = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_glue.py")]
    proc = subprocess.run([*argv, "--out", str(out), "--backfill-curves"], capture_output=True, text=True, timeout=120)
    assert (
        proc.returncode != 0 and "--backfill-curves" in proc.stderr and "not a bench_glue results file" in proc.stderr
    )
    assert "Traceback" not in proc.stderr and out.read_text() == json.dumps({"runs": "none"})
    assert not out.with_suffix(".md").exists()
