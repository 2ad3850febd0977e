"""Heterogeneous-rank aggregators head to head: every aggregator x {lite, cvx} x seeds on the non-IID
deadline experiment and on GLUE RTE / MRPC (their laptop presets), through the same engine as
`fedranklite run`. Resumable: runs already in the output JSON are skipped.

    FEDRANKLITE_GLUE_DIR=../shared/data/glue python benchmarks/bench_aggregators.py \\
        [--tasks noniid,rte,mrpc] [--seeds 3] [--out benchmarks/results/aggregators.json]

Per (task, aggregator, scheduler): final score (mean ± sd over seeds), best score, simulated
time-to-target (seeds that reached it), bytes up per client-round, deadline compliance, and the rank-collapse
diagnostics of the final global adapter (block effective rank of the first LoRA module group, and the
share of rank blocks 9-16 in its energy). Also a "who wins where" list: the best mean final score per
(task, scheduler), with the runner-up and whether the gap exceeds one standard deviation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_glue import _ms  # noqa: E402  (mean ± sd over seeds, as in the GLUE table)

AGGREGATORS = ["fedavg", "blockwise", "svd", "stack", "hetlora"]
SCHEDULERS = ["lite", "cvx"]
GLUE_SETS = ["evaluation.max_samples=400", "evaluation.eval_every=5"]


def config_for(task: str, scheduler: str) -> tuple[Path, list[str]]:
    if task == "noniid":
        return ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml", [f"federation.scheduler.type={scheduler}"]
    return ROOT / "configs" / "experiments" / "glue" / f"{task}_{scheduler}.yaml", list(GLUE_SETS)


def run_one(task: str, aggregator: str, scheduler: str, seed: int, out_dir: Path) -> dict:
    from fedranklite.config import load_config
    from fedranklite.engine import build_engine

    config, sets = config_for(task, scheduler)
    cfg = load_config(config, sets + [f"federation.aggregation={aggregator}", f"seed={seed}",
                                      f"experiment_name=agg_{task}_{aggregator}_{scheduler}_s{seed}",
                                      f"output_dir={out_dir}", "metrics.checkpoint=false"])
    engine = build_engine(cfg)
    summary = engine.run()
    energy = engine.state.records[-1]["rank_energy"]
    group = next(iter(energy.values())) if energy else None
    tail_share = None
    if group:
        e = np.asarray(group["energy"], dtype=np.float64)
        tail_share = float(e[len(e) // 2:].sum() / e.sum()) if e.sum() > 0 else 0.0
    return {"task": task, "aggregator": aggregator, "scheduler": scheduler, "seed": seed,
            "metric": summary["metric"], "final_score": summary["final_score"], "best_score": summary["best_score"],
            "time_to_target": summary["time_to_target"], "target": summary["target"],
            "bytes_up_per_client_round": summary["bytes"]["up_per_client_per_round"],
            "deadline_compliance_pct": summary["deadline_compliance_pct"],
            "block_effective_rank": group["block_effective_rank"] if group else None,
            "effective_rank": group["effective_rank"] if group else None, "upper_half_energy_share": tail_share,
            "sim_time_total": summary["sim_time_total"], "wall_time_total": summary["wall_time_total"]}


def markdown(runs: list[dict]) -> str:
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["task"], r["scheduler"], r["aggregator"]), []).append(r)
    lines = ["| task | scheduler | aggregator | seeds | final score | best score | time-to-target (sim s; reached) | "
             "kB up per client-round | compliance % | block eff. rank | upper-half energy share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {t: i for i, t in enumerate(["noniid", "rte", "mrpc"])}
    for (task, sched, agg), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1],
                                                                        AGGREGATORS.index(kv[0][2]))):
        reached = [r["time_to_target"]["sim_seconds"] for r in rs if r["time_to_target"]["sim_seconds"] is not None]
        ttt = f"{np.mean(reached):.0f} ({len(reached)}/{len(rs)})" if reached else f"not reached (0/{len(rs)})"
        lines.append(f"| {task} | {sched} | {agg} | {len(rs)} | {rs[0]['metric']} {_ms([r['final_score'] for r in rs])} | "
                     f"{_ms([r['best_score'] for r in rs])} | {ttt} | "
                     f"{np.mean([r['bytes_up_per_client_round'] for r in rs]) / 1e3:.0f} | "
                     f"{np.mean([r['deadline_compliance_pct'] for r in rs]):.0f} | "
                     f"{_ms([r['block_effective_rank'] for r in rs])} | {_ms([r['upper_half_energy_share'] for r in rs])} |")
    lines += ["", "Who wins where (mean final score):", ""]
    for task in sorted({k[0] for k in groups}, key=lambda t: order.get(t, 9)):
        for sched in SCHEDULERS:
            cands = [(np.mean([r["final_score"] for r in rs]), np.std([r["final_score"] for r in rs]), agg)
                     for (t, s, agg), rs in groups.items() if t == task and s == sched]
            if len(cands) < 2:
                continue
            cands.sort(reverse=True)
            (m1, s1, a1), (m2, s2, a2) = cands[0], cands[1]
            clear = "clearly (gap > 1 sd)" if m1 - m2 > max(s1, s2) else "within noise (gap <= 1 sd)"
            lines.append(f"- {task} / {sched}: {a1} {m1:.3f}, then {a2} {m2:.3f}: {clear}; last "
                         f"{cands[-1][2]} {cands[-1][0]:.3f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "aggregators.json"))
    ap.add_argument("--tasks", default="noniid,rte,mrpc")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--aggregators", default=",".join(AGGREGATORS))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("FEDRANKLITE_GLUE_DIR"):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {(r["task"], r["aggregator"], r["scheduler"], r["seed"]) for r in runs}
    work = ROOT / "results" / "bench_aggregators"
    for task in [t for t in args.tasks.split(",") if t]:
        for seed in range(args.seeds):
            for sched in SCHEDULERS:
                for agg in args.aggregators.split(","):
                    if (task, agg, sched, seed) in done:
                        continue
                    t0 = time.perf_counter()
                    rec = run_one(task, agg, sched, seed, work)
                    print(f"{task} {agg} {sched} seed {seed}: {rec['metric']} {rec['final_score']:.3f} "
                          f"(block eff. rank {rec['block_effective_rank']}, {time.perf_counter() - t0:.0f}s)", flush=True)
                    runs.append(rec)
                    out.write_text(json.dumps({"runs": runs}, indent=1, default=float))
                    out.with_suffix(".md").write_text(markdown(runs))
    out.with_suffix(".md").write_text(markdown(runs))
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
