"""`fedranklite report` and stats.py: bootstrap CIs checked against hand-computed cases, censored
time-to-target, the star rule, and reports of hand-written sweep folders (runs missing, censored pairs,
runs that disagree with their reference, hostile files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedranklite.cli import main as cli
from fedranklite.core.records import RoundRecord
from fedranklite.study import stats
from fedranklite.study.report import build
from fedranklite.study.report_figures import score_steps
from fedranklite.study.report_markdown import markdown


def test_bootstrap_ci_of_four_values_matches_the_enumerated_distribution():
    # Resample means of [0, 1, 2, 10] (4^4 = 256 equally likely ordered draws): P(mean <= 0.25) = 5/256
    # = 1.95 % and P(mean <= 0.5) = 15/256 = 5.9 %, so the 2.5th percentile is 0.5; from the top,
    # P(mean >= 8) = 5/256 and P(mean >= 7.75) = 9/256 = 3.5 %, so the 97.5th percentile is 7.75.
    est = stats.mean_ci([0, 1, 2, 10], resamples=10000, seed=0, method="percentile")
    assert (est.n, est.mean, est.lo, est.hi) == (4, 3.25, 0.5, 7.75)


def test_bootstrap_ci_of_two_values_is_their_range():
    # Resample means of [a, b]: a (1/4), (a+b)/2 (1/2), b (1/4): the 2.5 and 97.5 percentiles are a and b
    est = stats.mean_ci([0.3, 0.8], resamples=10000, seed=1, method="percentile")
    assert est.mean == pytest.approx(0.55) and (est.lo, est.hi) == (0.3, 0.8)


def test_paired_bootstrap_uses_per_seed_differences():
    ref = {0: 0.70, 1: 0.72, 2: 0.71, 3: 0.69, 4: 0.5}
    cell = {0: 0.70, 1: 0.73, 2: 0.73, 3: 0.79}  # seed 4 missing: left out; differences 0, 1, 2, 10 (x 0.01)
    assert stats.paired_differences(cell, ref)[0] == [0, 1, 2, 3]
    est = stats.paired_ci(cell, ref)
    assert est.n == 4 and est.mean == pytest.approx(0.0325)
    # BCa: the percentile interval [0.005, 0.0775] moved toward the long right tail (the 0.10 difference)
    assert est.lo == pytest.approx(0.0075) and est.hi == pytest.approx(0.08) and est.excludes_zero
    assert stats.paired_ci(cell, ref, method="percentile").to_json()["ci"] == pytest.approx([0.005, 0.0775])
    # a constant shift: the CI is that constant and excludes 0, however far apart the unpaired values are
    shifted = {s: v + 0.02 for s, v in ref.items()}
    est = stats.paired_ci(shifted, ref)
    assert (est.lo, est.hi) == pytest.approx((0.02, 0.02)) and est.excludes_zero
    # a difference that changes sign: the CI straddles 0
    est = stats.paired_ci({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 2.0, 2: 2.0})
    assert est.lo == -1.0 and est.hi == 1.0 and not est.excludes_zero


def test_single_and_missing_values_have_no_ci():
    assert stats.mean_ci([None, float("nan")]).to_json() == {"n": 0, "mean": None, "ci": None}
    assert stats.mean_ci([0.4, None]).to_json() == {"n": 1, "mean": 0.4, "ci": None}


def test_censored_median_and_wins_count_unreached_as_infinite():
    assert stats.censored_median([100, 200, None, 300]) == 250  # (200 + 300) / 2
    assert stats.censored_median([50, None, None, 250]) == math.inf  # half never reached: not reached
    assert stats.censored_median([None]) == math.inf and stats.censored_median([]) is None
    ref = {0: 100.0, 1: 200.0, 2: None, 3: 300.0}
    cell = {0: 50.0, 1: None, 2: None, 3: 250.0}
    assert stats.wins_losses_ties(cell, ref, lower_is_better=True) == (2, 1, 1)  # unreached vs unreached: tie
    assert stats.wins_losses_ties(cell, ref, lower_is_better=True, missing_is_worst=False) == (2, 0, 0)
    assert stats.wins_losses_ties({0: 0.9}, {0: 0.8}, lower_is_better=False) == (1, 0, 0)


def test_score_steps_hold_the_latest_evaluation():
    recs = [_record(1, 10.0, 0.5), _record(2, 15.0, None), _record(3, 20.0, 0.7)]
    got = score_steps([RoundRecord.from_json(r) for r in recs], np.array([0.0, 10.0, 15.0, 25.0]))
    assert np.isnan(got[0]) and got[1:].tolist() == [0.5, 0.5, 0.7]


# ---- a hand-written sweep folder

FINAL = {"ref": [0.70, 0.72, 0.71, 0.69], "new": [0.70, 0.73, 0.73, 0.79]}
TTT = {"ref": [100.0, 200.0, None, 300.0], "new": [50.0, None, None, 250.0]}


def _record(rnd: int, sim_time: float, score) -> dict:
    return {
        "round": rnd,
        "selected": [],
        "clients": [],
        "out_of_memory": [],
        "rejected": {},
        "stragglers": [],
        "compliant": True,
        "round_sim_seconds": 10.0,
        "sim_time": sim_time,
        "fairness": {},
        "eval": None,
        "score": score,
        "bytes_up": 0,
        "bytes_down": 0,
        "wall_seconds": 1.0,
    }


def _metrics(final: float, ttt) -> dict:
    return {
        "experiment_name": "x",
        "rounds_completed": 4,
        "metric": "accuracy",
        "higher_is_better": True,
        "target": 0.7,
        "final_score": final,
        "best_score": final + 0.01,
        "time_to_target": {"round": None if ttt is None else int(ttt // 100) + 1, "sim_seconds": ttt},
        "sim_time_total": 400.0,
        "wall_time_total": 9.0,
        "deadline_compliance_pct": 75.0,
        "client_compliance_pct": 90.0,
        "stragglers_total": 1,
        "fairness_final": {"p10": 0.3, "p50": 0.4, "p90": final},
        "fairness_mean": {},
        "bytes": {"up_per_client_per_round": 2048.0, "down_per_client_per_round": 4096.0},
        "peak_memory_mb": {},
        "rounds": [],
    }


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    out = tmp_path / "sw"
    runs = []
    for cell in ("ref", "new"):
        for seed in range(5):
            folder = f"{cell}/seed{seed}"
            runs.append(
                {
                    "cell": cell,
                    "group": cell,
                    "axes": {},
                    "seed": seed,
                    "folder": folder,
                    "overrides": [],
                    "num_rounds": 4,
                    "stop_at_target": False,
                    "clients": 10,
                    "clients_per_round": 5,
                }
            )
            if seed == 4:
                if cell == "ref":  # killed after 2 of 4 rounds: not finished
                    (out / folder).mkdir(parents=True)
                    (out / folder / "metrics.json").write_text(
                        json.dumps({**_metrics(0.5, None), "rounds_completed": 2})
                    )
                continue  # new/seed4 never started
            (out / folder).mkdir(parents=True)
            (out / folder / "metrics.json").write_text(json.dumps(_metrics(FINAL[cell][seed], TTT[cell][seed])))
            steps = [_record(r, 100.0 * r, FINAL[cell][seed] - 0.1 / r) for r in range(1, 5)]
            (out / folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    spec = {"schedulers": {"ref": {}, "new": {}}, "axes": {}, "reference": "ref", "seeds": list(range(5))}
    (out / "sweep.json").write_text(json.dumps({**spec, "runs": runs}))
    return out


def test_report_of_a_hand_written_sweep(sweep_dir, capsys):
    assert cli.main(["report", str(sweep_dir)]) == 0
    text = capsys.readouterr().out
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    assert report["runs"]["total"] == 10 and report["runs"]["finished"] == 8
    assert sorted(report["runs"]["missing"]) == ["new/seed4", "ref/seed4"]
    ref, new = report["cells"]
    assert (ref["group"], ref["n"], ref["planned"], ref["reached"]) == ("ref", 4, 5, 3)
    assert (new["n"], new["reached"]) == (4, 2)
    assert ref["metrics"]["ttt_seconds"]["mean"] == 200.0 and ref["metrics"]["ttt_seconds"]["n"] == 3
    assert ref["ttt_median_censored"] == 250.0 and ref["ttt_median_reached"]
    assert new["ttt_median_censored"] is None and not new["ttt_median_reached"]
    assert new["metrics"]["kb_up"]["mean"] == 2.0 and new["metrics"]["sec_per_round"]["ci"] == [100.0, 100.0]
    paired = {p["metric"]: p for p in report["paired"]}
    final = paired["final_score"]
    assert (final["cell"], final["reference"], final["n"]) == ("new", "ref", 4)
    assert final["ci"] == pytest.approx([0.0075, 0.08]) and final["ci_excludes_zero"]  # BCa
    assert not final["excludes_zero"] and final["no_star"] == "fewer than 8 pairs"  # 4 pairs: no star
    assert (final["wins"], final["losses"], final["ties"]) == (3, 0, 1) and final["sign_p"] == 0.25
    ttt = paired["ttt_seconds"]
    assert ttt["n"] == 2 and ttt["mean"] == -50.0 and ttt["ci"] == [-50.0, -50.0]
    assert (ttt["wins"], ttt["losses"], ttt["ties"]) == (2, 1, 1)
    assert ttt["censored_pairs"] == 2 and not ttt["excludes_zero"] and ttt["order_unknown"] == 0
    assert report["warnings"] == [] and report["unreadable"] == []
    md = (sweep_dir / "report" / "report.md").read_text()
    assert md.strip() in text  # the tables are printed too
    assert "Incomplete: 8 of 10 runs finished; 2 missing" in md
    assert "| ref | 4 of 5 |" in md and "| 3/4 |" in md and "| 2/4 |" in md and "not reached" in md
    assert "Budget: 5 seeds per cell" in md and "4 rounds per run, 10 clients (5 per round)" in md
    assert "reference cell: **ref**" in md
    from matplotlib.image import imread

    for name in ("ttt.png", "curves.png"):
        image = imread(sweep_dir / "report" / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.01


def test_report_against_another_reference_and_to_another_folder(sweep_dir, tmp_path, capsys):
    assert (
        cli.main(["report", str(sweep_dir), "--reference", "new", "--out", str(tmp_path / "r2"), "--resamples", "200"])
        == 0
    )
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert {(p["cell"], p["reference"]) for p in report["paired"]} == {("ref", "new")}
    assert report["resamples"] == 200


def test_report_errors_are_one_line(sweep_dir, tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "sweep.json: not found" in capsys.readouterr().err
    assert cli.main(["report", str(sweep_dir), "--reference", "cvx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a cell of this sweep" in err[0]


def test_report_of_a_sweep_with_nothing_finished(sweep_dir, capsys):
    for folder in sweep_dir.glob("*/seed*"):
        (folder / "metrics.json").unlink()
    assert cli.main(["report", str(sweep_dir)]) == 0
    captured = capsys.readouterr()
    assert "0 of 10 runs finished; 10 missing" in captured.out and "no figures" in captured.err
    assert not (sweep_dir / "report" / "ttt.png").exists()


def test_star_needs_enough_pairs_and_no_censoring():
    ref = {s: 100.0 for s in range(10)}
    cell = {s: 90.0 + s % 3 for s in range(10)}  # every difference -10..-8: the CI excludes 0
    est = stats.paired_ci(cell, ref)
    assert est.excludes_zero and stats.star(est) == (True, None)
    assert stats.star(est, censored=1) == (False, "1 censored pair(s)")
    few = stats.paired_ci({s: cell[s] for s in range(7)}, ref)
    assert few.excludes_zero and stats.star(few) == (False, "fewer than 8 pairs")
    assert stats.star(stats.paired_ci({0: 1.0}, {0: 0.0})) == (False, "no CI")
    assert stats.censored_pairs({0: None, 1: 5.0, 2: None, 3: 1.0}, {0: 3.0, 1: None, 2: None, 3: 2.0, 4: 1.0}) == 3
    assert stats.sign_test(2, 8) == pytest.approx(0.109375) and stats.sign_test(0, 0) is None
    assert stats.sign_test(5, 5) == 1.0


def make_sweep(out: Path, runs: dict[str, list], reference: str = "ref") -> Path:
    """A sweep folder: runs[cell][seed] is a dict of metrics.json fields over _metrics(0.7, None), or None
    for a run that never started."""
    entries = []
    for cell, seeds in runs.items():
        for seed, fields in enumerate(seeds):
            folder = f"{cell}/seed{seed}"
            entries.append(
                {"cell": cell, "group": cell, "axes": {}, "seed": seed, "folder": folder, "overrides": []}
                | {"num_rounds": 4, "stop_at_target": False, "clients": 10, "clients_per_round": 5}
            )
            if fields is None:
                continue
            (out / folder).mkdir(parents=True)
            (out / folder / "metrics.json").write_text(json.dumps({**_metrics(0.7, None), **fields}))
            steps = [_record(r, 100.0 * r, 0.7 - 0.1 / r) for r in range(1, 5)]
            (out / folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    spec = {"schedulers": {c: {} for c in runs}, "axes": {}, "reference": reference}
    (out / "sweep.json").write_text(json.dumps({**spec, "seeds": list(range(len(runs[reference]))), "runs": entries}))
    return out


def ttt(seconds):
    return {"time_to_target": {"round": None if seconds is None else 1, "sim_seconds": seconds}}


def test_time_to_target_over_censored_pairs_gets_no_star(tmp_path, capsys):
    # the reference reaches at 100 s on all 10 seeds; the cell at 50 s on 2 seeds and never on 8: the mean
    # over both-reached seeds is -50 with CI [-50, -50], but it hides 8 losses
    out = make_sweep(tmp_path / "sw", {"ref": [ttt(100.0)] * 10, "new": [ttt(50.0)] * 2 + [ttt(None)] * 8})
    assert cli.main(["report", str(out), "--resamples", "500"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    row = next(p for p in report["paired"] if p["metric"] == "ttt_seconds")
    assert (row["n"], row["mean"], row["ci"], row["seeds_in_both"]) == (2, -50.0, [-50.0, -50.0], 10)
    assert row["ci_excludes_zero"] and not row["excludes_zero"] and row["censored_pairs"] == 8
    assert (row["wins"], row["losses"], row["ties"]) == (2, 8, 0) and row["sign_p"] == pytest.approx(0.109375)
    rounds = next(p for p in report["paired"] if p["metric"] == "ttt_rounds")
    assert rounds["censored_pairs"] == 8 and not rounds["excludes_zero"]
    md = (out / "report" / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| new | ref | time to target"))
    assert "(both reached)" in line and "| 2 of 10 |" in line and "[-50.0, -50.0] |" in line and " * " not in line
    assert "| 2/8/0 | 0.109 (sign) | – | – | 8 censored pair(s): no star |" in line
    assert "Holm" in md and "BCa" in md
    # without censoring and with 10 pairs, the same kind of shift is starred
    out = make_sweep(tmp_path / "sw2", {"ref": [ttt(100.0)] * 10, "new": [ttt(50.0 + s) for s in range(10)]})
    report, _ = build(out, resamples=500)
    row = next(p for p in report["paired"] if p["metric"] == "ttt_seconds")
    assert row["excludes_zero"] and row["censored_pairs"] == 0 and row["no_star"] is None


def test_an_unreached_run_that_stopped_early_is_of_unknown_order(tmp_path):
    short = {**ttt(None), "sim_time_total": 80.0}  # ran 80 s in all, never reached; the reference reached at 100 s
    out = make_sweep(tmp_path / "sw", {"ref": [ttt(100.0)] * 3, "new": [short, ttt(None), ttt(90.0)]})
    report, _ = build(out, resamples=200)
    row = next(p for p in report["paired"] if p["metric"] == "ttt_seconds")
    assert row["order_unknown"] == 1 and (row["wins"], row["losses"]) == (1, 2)


def test_runs_that_disagree_with_their_reference_are_warned_and_not_paired(tmp_path, capsys):
    out = make_sweep(
        tmp_path / "sw",
        {
            "ref": [ttt(100.0)] * 3,
            "other_target": [{**ttt(50.0), "target": 0.8}] * 3,
            "other_metric": [{**ttt(50.0), "metric": "f1"}] * 3,
        },
    )
    report, _ = build(out, resamples=200)
    rows = {(p["cell"], p["metric"]): p for p in report["paired"]}
    skipped = rows[("other_target", "ttt_seconds")]
    assert skipped["mean"] is None and not skipped["excludes_zero"] and "target" in skipped["skipped"]
    assert rows[("other_target", "ttt_rounds")]["mean"] is None
    assert rows[("other_target", "final_score")]["mean"] == 0.0  # the score difference still pairs
    assert all(p["mean"] is None for (c, _), p in rows.items() if c == "other_metric")
    warnings = report["warnings"]
    assert any(w.startswith("other_target vs ref: target differs (0.8 vs 0.7") for w in warnings)
    assert any(w.startswith("other_metric vs ref: metric differs ('f1' vs 'accuracy'") for w in warnings)
    assert any(w.startswith("finished runs differ in metric") for w in warnings)
    assert report["metric"] == "accuracy" and report["target"] == 0.7  # the reference's, not the first run's
    md = markdown(report)
    assert "**Warnings:**" in md and "- other_target vs ref: target differs" in md
    # the same check per pair: a different num_rounds in sweep.json
    plan = json.loads((out / "sweep.json").read_text())
    for entry in plan["runs"]:
        entry["num_rounds"] = 3 if entry["cell"] == "other_target" else 4  # 4 rounds done: finished
    (out / "sweep.json").write_text(json.dumps(plan))
    report, _ = build(out, resamples=200)
    assert any("num_rounds differs (3 vs 4" in w for w in report["warnings"])


def test_per_metric_n_is_shown_when_values_are_dropped(tmp_path):
    runs = [{"deadline_compliance_pct": None}, {}, {}, {"deadline_compliance_pct": float("nan")}]
    out = make_sweep(tmp_path / "sw", {"ref": [{}] * 4, "new": runs})
    md = markdown(build(out, resamples=200)[0])
    new = next(ln for ln in md.splitlines() if ln.startswith("| new | 4 | 75.0"))
    assert "75.0 [75.0, 75.0] (n=2)" in new
    assert "| ref | 4 | 75.0 [75.0, 75.0] |" in md  # all four: no n


def test_hostile_files_make_one_warning_per_run_not_a_traceback(tmp_path, capsys):
    out = make_sweep(tmp_path / "sw", {"ref": [{}] * 4, "new": [{}] * 4})
    (out / "new/seed1/metrics.json").write_text(json.dumps({**_metrics(0.7, None), "final_score": "high"}))
    (out / "new/seed2/metrics.json").write_text(json.dumps({**_metrics(0.7, None), "time_to_target": [1]}))
    plan = json.loads((out / "sweep.json").read_text())
    del plan["runs"][7]["folder"]  # new/seed3
    plan["runs"].append("not a run")
    (out / "sweep.json").write_text(json.dumps(plan))
    assert cli.main(["report", str(out), "--resamples", "200"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads((out / "report" / "report.json").read_text())
    names = [u["run"] for u in report["unreadable"]]
    assert names == ["new/seed1", "new/seed2", "runs[7]", "runs[8]"]
    assert "final_score: 'high' is not a number" in report["unreadable"][0]["error"]
    assert report["runs"]["finished"] == 5 and len(report["runs"]["missing"]) == 4
    md = (out / "report" / "report.md").read_text()
    assert sum(ln.startswith("- new/seed1: unreadable") for ln in md.splitlines()) == 1
    assert all("\n" not in w for w in report["warnings"])


def test_report_keeps_every_per_seed_value_and_tests_the_primary_metric(tmp_path):
    """report.json holds each run's values (so every star can be recomputed), the common horizon and the
    primary metric; a cell whose score is higher on every seed has a Holm-corrected Wilcoxon p and a star,
    and a null states its minimum detectable effect."""
    out = make_sweep(
        tmp_path / "sw",
        {"ref": [{"final_score": 0.70}] * 10, "new": [{"final_score": 0.72 + 0.001 * s} for s in range(10)]},
    )
    for s in range(10):  # the new cell learns faster: its rounds score higher
        steps = [_record(r, 100.0 * r, 0.7 - 0.1 / r + 0.05 + 0.001 * s) for r in range(1, 5)]
        (out / f"new/seed{s}" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    report, _ = build(out, resamples=500)
    assert report["primary_metric"] == "auc" and report["horizon_sim_seconds"] == 400.0
    assert set(report["per_seed"]) == {"ref", "new"} and len(report["per_seed"]["new"]) == 10
    assert report["per_seed"]["new"]["3"]["final_score"] == pytest.approx(0.723)
    auc = next(p for p in report["paired"] if p["metric"] == "auc")
    assert auc["mean"] == pytest.approx(0.0545, abs=1e-9) and auc["wilcoxon_p"] == pytest.approx(2 / 1024)
    assert auc["holm_p"] == auc["wilcoxon_p"] and auc["excludes_zero"] and len(auc["differences"]) == 10
    null = next(p for p in report["paired"] if p["metric"] == "sec_per_round")  # identical round times
    assert not null["excludes_zero"] and null["mde"] == 0.0
    md = markdown(report)
    assert "over the horizon (primary)" in md and "Holm p" in md
