"""Held-out error of the surrogate backend: every committed real-training run it was not fitted on, run again with
client training replaced by the surrogate, and compared run by run.

    python experiments/surrogate_heldout/heldout.py                 # every committed run -> results.json, results.md
    python experiments/surrogate_heldout/heldout.py --calibration configs/surrogate/<other>.json --out <folder>

Real runs: `experiments/positive_control/runs/<arm>/seed<k>/` (every arm, every seed committed so far) and
`experiments/learner_stability/runs/{alpha05,shipped}/seed<k>/` (the fixed scheduler at Dirichlet 0.5 and 0.1).
A run counts once its folder holds config.yaml, metrics.json and rounds.jsonl; rerun the script when more seeds
are committed. Each surrogate run loads the real run's own config.yaml and changes only the backend
(`engine.backend=surrogate`, the calibration), the output folder (a temporary one, deleted) and checkpoints (off):
same seed, tiers, hidden per-client deviations, partition, schedulers, deadline and straggler policy.

Per run, real vs surrogate: total simulated time and mean round time; client deadline compliance (share of
client-rounds that met the deadline), accepted share (client-rounds whose update was aggregated, partial ones
included) and round compliance; final score and the mean absolute score error over the evaluated rounds; per
client-round ranks (share equal, mean absolute difference) and per-client simulated seconds. Per arm and overall:
mean absolute error and mean signed error (surrogate minus real) with their sample SD over seeds, min and max.
The calibration (fitted on seed 0, Dirichlet 0.1, 3 rounds) shares no seed with these runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: the "script" stamp and portable paths)

CALIBRATION = ROOT / "configs" / "surrogate" / "minilm_profile_clock.json"
SOURCES = (  # (study, runs folder, arms to use; None: every arm)
    ("positive_control", ROOT / "experiments" / "positive_control" / "runs", None),
    ("learner_stability", ROOT / "experiments" / "learner_stability" / "runs", ("alpha05", "shipped")),
)
TIME_DRIVEN = ("fixed", "cvx", "uniform")  # ranks follow the time model and the tier prior only (lite: loss drops)
AGGREGATED = ("accepted", "partial")
# errors (surrogate minus real) summarised per arm and overall: key, label, unit
ERRORS = (
    ("sim_time_s", "total simulated time", "s"),
    ("sim_time_pct", "total simulated time", "%"),
    ("mean_round_s", "mean round time", "s"),
    ("client_compliance_pp", "client deadline compliance", "pp"),
    ("accepted_pp", "accepted share", "pp"),
    ("round_compliance_pp", "round compliance", "pp"),
    ("final_score", "final score", "accuracy points"),
    ("score_rounds_mae", "score, mean abs error over rounds", "accuracy points"),
)


def find_runs() -> list[dict]:
    runs = []
    for study, folder, arms in SOURCES:
        for arm_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if arms is not None and arm_dir.name not in arms:
                continue
            for seed_dir in sorted(arm_dir.glob("seed*")):
                if all((seed_dir / f).is_file() for f in ("config.yaml", "metrics.json", "rounds.jsonl")):
                    runs.append({"study": study, "arm": arm_dir.name, "dir": seed_dir})
    return runs


def read_rounds(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_facts(summary: dict, rounds: list[dict]) -> dict:
    clients = [c for r in rounds for c in r["clients"]]
    n = max(len(clients), 1)
    return {
        "rounds": summary["rounds_completed"],
        "sim_time_s": summary["sim_time_total"],
        "mean_round_s": summary["sim_time_total"] / max(summary["rounds_completed"], 1),
        "client_compliance_pct": summary["client_compliance_pct"],
        "accepted_pct": 100.0 * sum(c["status"] in AGGREGATED for c in clients) / n,
        "round_compliance_pct": summary["deadline_compliance_pct"],
        "stragglers": summary["stragglers_total"],
        "statuses": {s: sum(c["status"] == s for c in clients) for s in sorted({c["status"] for c in clients})},
        "final_score": summary["final_score"],
        "scores": [r["score"] for r in summary["rounds"]],
        "mean_rank_by_tier": {
            t: statistics.fmean(c["rank"] for c in clients if c["tier"] == t)
            for t in sorted({c["tier"] for c in clients})
        },
    }


def surrogate_run(run_dir: Path, calibration: Path) -> tuple[dict, list[dict], float]:
    from fedranklite.backends.surrogate.engine import build_surrogate_engine
    from fedranklite.config.files import load_config

    scratch = Path(tempfile.mkdtemp(prefix="surrogate_heldout_"))
    try:
        cfg = load_config(
            run_dir / "config.yaml",
            [
                "engine.backend=surrogate",
                f"engine.surrogate.calibration={calibration}",
                f"output_dir={scratch}",
                "metrics.checkpoint=false",
            ],
        )
        began = time.perf_counter()
        summary = build_surrogate_engine(cfg).run().to_json()
        wall = time.perf_counter() - began
        rounds = read_rounds(cfg.results_dir / "rounds.jsonl")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary, rounds, wall


def compare(run: dict, calibration: Path) -> dict:
    real_summary = json.loads((run["dir"] / "metrics.json").read_text())
    real_rounds = read_rounds(run["dir"] / "rounds.jsonl")
    sur_summary, sur_rounds, wall = surrogate_run(run["dir"], calibration)
    real, sur = run_facts(real_summary, real_rounds), run_facts(sur_summary, sur_rounds)
    # client-rounds matched by (round, client id)
    sur_by = {(r["round"], c["cid"]): c for r in sur_rounds for c in r["clients"]}
    pairs = [(c, sur_by.get((r["round"], c["cid"]))) for r in real_rounds for c in r["clients"]]
    matched = [(a, b) for a, b in pairs if b is not None]
    rank_equal = sum(a["rank"] == b["rank"] for a, b in matched)
    rel_time = [abs(b["sim_seconds"] - a["sim_seconds"]) / a["sim_seconds"] for a, b in matched if a["sim_seconds"]]
    common_rounds = min(len(real["scores"]), len(sur["scores"]))
    score_err = [sur["scores"][i] - real["scores"][i] for i in range(common_rounds)]
    scheduler = real_summary["scheduler"]
    return {
        "study": run["study"],
        "arm": run["arm"],
        "seed": int(run["dir"].name.removeprefix("seed")),
        "run": run["dir"].relative_to(ROOT).as_posix(),
        "scheduler": scheduler,
        "time_driven": scheduler in TIME_DRIVEN,
        "alpha": _alpha(run["dir"]),
        "real": real,
        "surrogate": sur,
        "client_rounds": len(pairs),
        "client_rounds_matched": len(matched),
        "ranks_equal_pct": 100.0 * rank_equal / max(len(matched), 1),
        "ranks_mean_abs_diff": statistics.fmean(abs(a["rank"] - b["rank"]) for a, b in matched) if matched else None,
        "client_time_mean_rel_diff": statistics.fmean(rel_time) if rel_time else None,
        "errors": {
            "sim_time_s": sur["sim_time_s"] - real["sim_time_s"],
            "sim_time_pct": 100.0 * (sur["sim_time_s"] - real["sim_time_s"]) / real["sim_time_s"],
            "mean_round_s": sur["mean_round_s"] - real["mean_round_s"],
            "client_compliance_pp": sur["client_compliance_pct"] - real["client_compliance_pct"],
            "accepted_pp": sur["accepted_pct"] - real["accepted_pct"],
            "round_compliance_pp": sur["round_compliance_pct"] - real["round_compliance_pct"],
            "final_score": sur["final_score"] - real["final_score"],
            "score_rounds_mae": statistics.fmean(abs(e) for e in score_err) if score_err else None,
        },
        "surrogate_wall_s": wall,
    }


def _alpha(run_dir: Path) -> float | None:
    import yaml

    part = (yaml.safe_load((run_dir / "config.yaml").read_text()).get("data") or {}).get("partition") or {}
    return part.get("alpha")


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def summarise(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows), "seeds": sorted(r["seed"] for r in rows)}
    for key, _label, _unit in ERRORS:
        errs = [r["errors"][key] for r in rows if r["errors"][key] is not None]
        if not errs:
            continue
        absolute = [abs(e) for e in errs]
        out[key] = {
            "mae": statistics.fmean(absolute),
            "mae_sd": _sd(absolute),
            "signed": statistics.fmean(errs),
            "signed_sd": _sd(errs),
            "min": min(errs),
            "max": max(errs),
            "exact": sum(abs(e) < 1e-9 for e in errs),
        }
    out["ranks_equal_pct"] = statistics.fmean(r["ranks_equal_pct"] for r in rows)
    out["ranks_mean_abs_diff"] = statistics.fmean(r["ranks_mean_abs_diff"] for r in rows)
    out["client_time_mean_rel_diff"] = statistics.fmean(r["client_time_mean_rel_diff"] for r in rows)
    out["final_score_real"] = statistics.fmean(r["real"]["final_score"] for r in rows)
    out["final_score_surrogate"] = statistics.fmean(r["surrogate"]["final_score"] for r in rows)
    out["final_score_real_range"] = [
        min(r["real"]["final_score"] for r in rows),
        max(r["real"]["final_score"] for r in rows),
    ]
    out["final_score_surrogate_range"] = [
        min(r["surrogate"]["final_score"] for r in rows),
        max(r["surrogate"]["final_score"] for r in rows),
    ]
    return out


def groups(rows: list[dict]) -> tuple[dict, dict]:
    by_arm: dict[str, list] = {}
    for r in rows:
        by_arm.setdefault(f"{r['study']}/{r['arm']}", []).append(r)
    out = {name: summarise(v) for name, v in by_arm.items()}
    selections = {
        "all runs": rows,
        "time-driven schedulers (fixed, cvx, uniform)": [r for r in rows if r["time_driven"]],
        "lite": [r for r in rows if not r["time_driven"]],
        "Dirichlet 0.5": [r for r in rows if r["alpha"] == 0.5],
        "Dirichlet 0.1": [r for r in rows if r["alpha"] == 0.1],
    }
    return out, {name: summarise(v) for name, v in selections.items() if v}


def _cell(stats: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    """`MAE / signed ± SD` of one error (scale 100: accuracy as points)."""
    s = stats.get(key)
    if s is None:
        return "-"

    def v(x: float) -> float:
        return 0.0 if abs(x) < 1e-9 else scale * x  # float rounding of an exact match (1e-14 s) prints as 0

    sd = "" if s["signed_sd"] is None else f" ± {v(s['signed_sd']):{fmt}}"
    return f"{v(s['mae']):{fmt}} / {v(s['signed']):+{fmt}}{sd}"


def markdown(result: dict) -> str:
    fit = result["calibration"]
    lines = [
        "# Surrogate held-out error: real-training runs vs the same configs with the surrogate backend",
        "",
        f"Calibration `{fit['file']}` (fitted on {fit['fitted_on']}); {result['n_runs']} real runs it was not "
        "fitted on. Each error cell: mean absolute error / mean signed error (surrogate minus real) ± sample SD "
        "over seeds. Time in % of the real total; compliance and accepted share in percentage points (client-rounds "
        "of the whole run); score in accuracy points (0-100); score over rounds: mean absolute error of the "
        "per-round evaluations (mean over runs).",
        "",
    ]
    head = (
        "| {} | n | total time % | client compliance pp | accepted pp | round compliance pp | final score pts "
        "| score over rounds pts | ranks equal % |"
    )
    for title, table in (("Per arm", result["per_arm"]), ("Overall", result["overall"])):
        lines += [f"## {title}", "", head.format("arm" if title == "Per arm" else "runs"), "|---" * 9 + "|"]
        for name, s in table.items():
            lines.append(
                f"| {name} | {s['n']} | {_cell(s, 'sim_time_pct', '.2f')} | "
                f"{_cell(s, 'client_compliance_pp', '.1f')} | {_cell(s, 'accepted_pp', '.1f')} | "
                f"{_cell(s, 'round_compliance_pp', '.1f')} | "
                f"{_cell(s, 'final_score', '.1f', 100)} | {100 * s['score_rounds_mae']['mae']:.1f} | "
                f"{s['ranks_equal_pct']:.1f} |"
            )
        lines.append("")
    lite = [r for r in result["runs"] if not r["time_driven"]]
    if lite:
        tiers = sorted(lite[0]["real"]["mean_rank_by_tier"])
        lines += [
            "## lite: mean rank by tier, real / surrogate",
            "",
            "| run | " + " | ".join(tiers) + " | accepted % real / sur | ranks equal % | mean abs rank diff |",
            "|---" * (len(tiers) + 4) + "|",
        ]
        for r in lite:
            a, b = r["real"]["mean_rank_by_tier"], r["surrogate"]["mean_rank_by_tier"]
            cells = " | ".join(f"{a[t]:.1f} / {b.get(t, float('nan')):.1f}" for t in tiers)
            lines.append(
                f"| {r['study']}/{r['arm']}/seed{r['seed']} | {cells} | {r['real']['accepted_pct']:.1f} / "
                f"{r['surrogate']['accepted_pct']:.1f} | {r['ranks_equal_pct']:.0f} | {r['ranks_mean_abs_diff']:.2f} |"
            )
        lines.append("")
    lines += [
        "## Per run",
        "",
        "| run | scheduler | rounds | total time s real / sur | mean round s real / sur | client compliance % "
        "real / sur | accepted % real / sur | final score real / sur | ranks equal % |",
        "|---" * 9 + "|",
    ]
    for r in result["runs"]:
        a, b = r["real"], r["surrogate"]
        lines.append(
            f"| {r['study']}/{r['arm']}/seed{r['seed']} | {r['scheduler']} | {a['rounds']} | "
            f"{a['sim_time_s']:.3f} / {b['sim_time_s']:.3f} | {a['mean_round_s']:.3f} / {b['mean_round_s']:.3f} | "
            f"{a['client_compliance_pct']:.1f} / {b['client_compliance_pct']:.1f} | "
            f"{a['accepted_pct']:.1f} / {b['accepted_pct']:.1f} | {a['final_score']:.3f} / {b['final_score']:.3f} | "
            f"{r['ranks_equal_pct']:.0f} |"
        )
    lines += ["", f"Written by `{result['script']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=Path, default=CALIBRATION)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json and results.md")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the engine's per-run notices; errors still raise
    import torch

    torch.set_num_threads(1)
    calibration = args.calibration.resolve()
    fit = json.loads(calibration.read_text())
    runs = find_runs()
    began = time.perf_counter()
    rows = []
    skipped = []
    for i, run in enumerate(runs, 1):
        try:
            row = compare(run, calibration)
        except json.JSONDecodeError as exc:  # a run folder being copied in right now: counted on the next pass
            skipped.append({"run": run["dir"].relative_to(ROOT).as_posix(), "reason": f"unreadable record: {exc}"})
            print(f"[{i}/{len(runs)}] skipped {skipped[-1]}", flush=True)
            continue
        e = row["errors"]
        print(
            f"[{i}/{len(runs)}] {row['run']}: time {e['sim_time_pct']:+.2f} %, compliance "
            f"{e['client_compliance_pp']:+.1f} pp, accepted {e['accepted_pp']:+.1f} pp, final "
            f"{row['real']['final_score']:.3f} -> {row['surrogate']['final_score']:.3f}, ranks equal "
            f"{row['ranks_equal_pct']:.0f} %",
            flush=True,
        )
        rows.append(row)
    per_arm, overall = groups(rows)
    src = fit.get("source", {})
    result = {
        "calibration": {
            "file": common.portable(str(calibration)),
            "fitted_on": f"{src.get('rounds')} rounds of configs/experiments/lite_noniid_deadline.yaml, seed 0, "
            f"Dirichlet 0.1, {src.get('time_mode')} time",
            "fit": {k: v for k, v in fit.items() if k not in ("memory_profile", "source")},
        },
        "n_runs": len(rows),
        "skipped": skipped,
        "errors": {key: f"{label}, surrogate minus real ({unit})" for key, label, unit in ERRORS},
        "per_arm": per_arm,
        "overall": overall,
        "runs": rows,
        "seconds": time.perf_counter() - began,
        "machine": common.machine(),
    }
    result = common.stamp(json.loads(json.dumps(result, default=str)), __file__)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
