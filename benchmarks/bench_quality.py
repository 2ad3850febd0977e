"""Scheduler quality: lite vs fixed vs cvx on lite_noniid_deadline and lite_iid (embedded default),
same seeds, reduced budgets so the whole grid fits the benchmark time. Reports every headline metric;
whichever wins, wins.

The non-IID experiment runs with Dirichlet alpha 0.5, the learner that meets the stability rule on every tuning
seed (experiments/learner_stability/); at the shipped 0.1 a run can end at one class whatever the scheduler.
The JSON records the tiers' pricing the runs were measured under (metrics.json's `pricing`); run_all.py shows
the table only for results that carry it."""

from __future__ import annotations

import statistics
import sys
import time

from common import QUICK, ROOT, write

SEEDS = (0,) if QUICK else (0, 1, 2)
EXPERIMENTS = ("lite_noniid_deadline", "lite_iid")
EXPERIMENT_SETS = {"lite_noniid_deadline": ["data.partition.alpha=0.5"], "lite_iid": []}
SCHEDULERS = ("lite", "fixed", "cvx")
BUDGET = [
    f"federation.num_rounds={2 if QUICK else 5}",
    f"training.max_local_steps={2 if QUICK else 5}",
    f"evaluation.max_samples={64 if QUICK else 200}",
    "data.embedded_train_size=1500",
    "output_dir=/tmp/fedranklite-bench",
]  # --quick: seed 0, 2 rounds of 2 local steps, 64 evaluation rows


def main():
    import torch

    torch.set_num_threads(1)  # two threads on a shared 2-core machine thrash; one is faster here
    from fedranklite.config.files import load_config
    from fedranklite.run.engine import build_engine

    runs, pricing = [], {}
    for exp in EXPERIMENTS:
        for sched in SCHEDULERS:
            for seed in SEEDS:
                cfg = load_config(
                    ROOT / "configs/experiments" / f"{exp}.yaml",
                    BUDGET
                    + EXPERIMENT_SETS[exp]
                    + [
                        f"federation.scheduler.type={sched}",
                        f"seed={seed}",
                        f"experiment_name=quality_{exp}_{sched}_{seed}",
                    ],
                )
                start = time.perf_counter()
                s = build_engine(cfg).run().to_json()  # as metrics.json holds it
                pricing[exp] = s.get("pricing")
                runs.append(
                    {
                        "experiment": exp,
                        "scheduler": sched,
                        "seed": seed,
                        "final_score": s["final_score"],
                        "best_score": s["best_score"],
                        "ttt_round": s["time_to_target"]["round"],
                        "ttt_sim_seconds": s["time_to_target"]["sim_seconds"],
                        "compliance_pct": s["deadline_compliance_pct"],
                        "sim_time_total": s["sim_time_total"],
                        "bytes_up_per_client_round": s["bytes"]["up_per_client_per_round"],
                        "fairness_final": s["fairness_final"],
                        "wall_seconds": time.perf_counter() - start,
                    }
                )
                print(runs[-1], flush=True)
    table = []
    for exp in EXPERIMENTS:
        for sched in SCHEDULERS:
            rs = [r for r in runs if r["experiment"] == exp and r["scheduler"] == sched]
            reached = [r["ttt_sim_seconds"] for r in rs if r["ttt_sim_seconds"] is not None]
            table.append(
                {
                    "experiment": exp,
                    "scheduler": sched,
                    "seeds": len(rs),
                    "final_score_mean": statistics.mean(r["final_score"] for r in rs),
                    "final_score_std": statistics.pstdev(r["final_score"] for r in rs),
                    "reached_target": f"{len(reached)}/{len(rs)}",
                    "ttt_sim_seconds_mean": statistics.mean(reached) if reached else None,
                    "compliance_pct_mean": statistics.mean(r["compliance_pct"] for r in rs),
                    "sim_time_total_mean": statistics.mean(r["sim_time_total"] for r in rs),
                    "kb_up_per_client_round": statistics.mean(r["bytes_up_per_client_round"] for r in rs) / 1024,
                    "client_loss_p50_mean": statistics.mean(r["fairness_final"]["p50"] for r in rs),
                    "client_loss_p90_mean": statistics.mean(r["fairness_final"]["p90"] for r in rs),
                }
            )
    settings = {"seeds": list(SEEDS), "overrides": BUDGET, "experiment_overrides": EXPERIMENT_SETS}
    write("quality", {"settings": settings, "pricing": pricing, "runs": runs, "table": table})


if __name__ == "__main__":
    sys.exit(main())
