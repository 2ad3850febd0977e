"""How the scheduler ranking depends on the price of a rank in compute.

    python experiments/sensitivity/bench_sensitivity.py [--seeds 10] [--out experiments/sensitivity/sensitivity.json]

The non-IID deadline experiment (configs/experiments/lite_noniid_deadline.yaml: 10 clients over the
base tiers, 5 per round, 8 rounds, 90 s deadline, use_partial) on the what-if surrogate calibrated on a
real run of it (configs/surrogate/minilm_noniid_deadline.json), with the analytic time model at the old
base cost a = 0.05 s per sample and a per-rank cost b swept from 0 through the cost measured by
`fedranklite profile` for MiniLM on this CPU to the old analytic value 0.005 s per sample per rank. For
each b and scheduler (fixed, cvx, lite) over `--seeds` seeds: mean simulated round seconds, client
deadline compliance, time-to-target (target: 70 % of the way from the fit's initial to its limit score)
and how many seeds reached it.

The surrogate replaces training by a calibrated progress model (surrogate.py): simulated times, ranks
and compliance follow the real engine exactly for cvx and fixed (checked in benchmarks/results/
surrogate.json), while the scores are a model and know nothing of whose data a client holds. So this
answers "how does the cost of a rank change who is fastest", not "which scheduler learns best".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_surrogate import reachable_target  # noqa: E402
from common import script_name, stamp  # noqa: E402

CONFIG = ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
CALIBRATION = ROOT / "configs" / "surrogate" / "minilm_noniid_deadline.json"
PROFILE = ROOT / "src" / "fedranklite" / "profiles" / "bundled-minilm-l6_none_b16_l64_query-value_cpu.json"
BASE_COST = 0.05  # s per sample at rank 0 on a compute_factor 1 device (the old analytic base)
OLD_PER_RANK = 0.005
SCHEDULERS = ("fixed", "cvx", "lite")


def per_rank_costs() -> list[tuple[str, float]]:
    measured = json.loads(PROFILE.read_text())["time_fit"]["slope"]
    return [
        ("zero", 0.0),
        ("measured (MiniLM, this CPU)", max(measured, 0.0)),
        ("1e-4", 1e-4),
        ("5e-4", 5e-4),
        ("1e-3", 1e-3),
        ("2.5e-3", 2.5e-3),
        ("old analytic 5e-3", OLD_PER_RANK),
    ]


def run_one(per_rank: float, scheduler: str, seed: int, work: Path, target: float) -> dict:
    import torch

    torch.set_num_threads(1)
    from fedranklite.backends.surrogate.engine import SurrogateFit, build_surrogate_engine
    from fedranklite.config.files import load_config

    fit = replace(SurrogateFit.load(CALIBRATION), sec_per_sample=BASE_COST, sec_per_sample_per_rank=per_rank)
    calibration = fit.save(work / f"fit_{per_rank:g}.json")
    name = f"{scheduler}_{per_rank:g}_{seed}"
    cfg = load_config(
        CONFIG,
        [
            f"experiment_name={name}",
            f"output_dir={work}",
            f"seed={seed}",
            f"federation.scheduler.type={scheduler}",
            "engine.backend=surrogate",
            f"engine.surrogate.calibration={calibration}",
            "engine.surrogate.rows_per_client=300",
            f"evaluation.target={target}",
            "metrics.checkpoint=false",
        ],
    )
    summary = build_surrogate_engine(cfg).run()
    rounds = summary.rounds
    return {
        "scheduler": scheduler,
        "per_rank": per_rank,
        "seed": seed,
        "mean_round_seconds": statistics.mean(r["round_sim_seconds"] for r in rounds),
        "client_compliance_pct": summary.client_compliance_pct,
        "time_to_target": summary.time_to_target.sim_seconds,
        "final_score": summary.final_score,
    }


def table(rows: list[dict], costs: list[tuple[str, float]], seeds: int, target: float) -> str:
    lines = [
        f"Per-rank compute cost sweep on the surrogate of lite_noniid_deadline ({seeds} seeds per cell, a = "
        f"{BASE_COST} s/sample, target {target}). Round s and compliance are exact simulations of the "
        "time model; time-to-target uses the surrogate's progress model (mean over the seeds that reached "
        "it; reached/seeds in brackets).",
        "",
        "| b (s/sample/rank) | "
        + " | ".join(f"{s}: round s / compliance % / time-to-target s" for s in SCHEDULERS)
        + " | fastest to target |",
        "|---|" + "---|" * (len(SCHEDULERS) + 1),
    ]
    for label, b in costs:
        cells, ttt = [], {}
        for s in SCHEDULERS:
            cell = [r for r in rows if r["scheduler"] == s and r["per_rank"] == b]
            reached = [r["time_to_target"] for r in cell if r["time_to_target"] is not None]
            ttt[s] = statistics.mean(reached) if reached else float("inf")
            cells.append(
                f"{statistics.mean(r['mean_round_seconds'] for r in cell):.1f} / "
                f"{statistics.mean(r['client_compliance_pct'] for r in cell):.0f} / "
                + (f"{ttt[s]:.0f} ({len(reached)}/{len(cell)})" if reached else f"- (0/{len(cell)})")
            )
        best = min(ttt, key=ttt.get)
        lines.append(f"| {label} ({b:g}) | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "sensitivity.json"))
    args = parser.parse_args()
    target = reachable_target(CALIBRATION)
    costs = per_rank_costs()
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for _, b in costs:
            for scheduler in SCHEDULERS:
                for seed in range(args.seeds):
                    rows.append(run_one(b, scheduler, seed, Path(tmp), target))
            print(f"per-rank cost {b:g}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    out = Path(args.out)
    result = {
        "settings": {
            "config": str(CONFIG.relative_to(ROOT)),
            "calibration": str(CALIBRATION.relative_to(ROOT)),
            "base_sec_per_sample": BASE_COST,
            "target": target,
            "seeds": args.seeds,
            "per_rank_costs": dict(costs),
        },
        "runs": rows,
    }
    out.write_text(json.dumps(stamp(result, __file__), indent=2))
    out.with_suffix(".md").write_text(
        table(rows, costs, args.seeds, target) + f"\nWritten by `{script_name(__file__)}`.\n"
    )
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
