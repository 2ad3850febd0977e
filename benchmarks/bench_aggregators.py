"""Heterogeneous-rank aggregators head to head: every aggregator x {lite, cvx} x seeds on the non-IID
deadline experiment and on GLUE RTE / MRPC (their presets at half the local work, see GLUE_SETS), through
the same engine as `fedranklite run`. Resumable: a run already in the output JSON is skipped when it was
recorded with the settings it would run with now (its resolved config, under `settings`); a run recorded under
other settings (an earlier clock, other tier factors, another headline config) is run again and replaced.

    FEDRANKLITE_GLUE_DIR=../shared/data/glue python benchmarks/bench_aggregators.py \\
        [--tasks noniid,rte,mrpc] [--seeds 3] [--control] [--reverse] [--out benchmarks/results/aggregators.json]

One torch thread per process is enough: run one process per task (or two per task, one with --reverse)
side by side with OMP_NUM_THREADS=1; simulated time comes from the rank profile (deterministic), so the
machine's load changes wall time only. Each run records its tiers' pricing (metrics.json's `pricing`).

Per (task, aggregator, scheduler): final score (mean ± sd over seeds), mean of the last three evaluations,
best score, simulated time-to-target (seeds that reached it), bytes up per client-round, deadline
compliance, and the rank-collapse diagnostics of the global adapter (first LoRA module group: effective
rank of B A, block effective rank, share of rank blocks 9-16 in its energy) after round 1 and at the end,
plotted per round in rank_collapse_<task>.png. --control adds fedavg with every client at r_max on the
non-IID task (no rank mixing: the update's own effective rank). Also a "who wins where" list: the best
mean final score per (task, scheduler), with the runner-up and whether the gap exceeds one sd.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RESULTS, mean_sd, sample_sd, script_name, stamp  # noqa: E402  (mean ± sd as in the GLUE table)

AGGREGATORS = ["fedavg", "blockwise", "svd", "stack", "hetlora"]
SCHEDULERS = ["lite", "cvx"]
# The non-IID task is the shipped headline config as it is (its own target, 0.85 accuracy).
# RTE / MRPC at half the GLUE preset's local work (4 instead of 8 steps of 16 per round, 5 rounds), with the
# deadline halved with it (90 -> 48 s). Scored once, after the last round, on 400 dev rows. The MiniLM GLUE
# configs (128 tokens) have no shipped rank profile: a run measures one on its machine first, so their
# simulated time depends on that machine (tests/test_shipped_references.py lists the gap).
GLUE_SETS = [
    "evaluation.max_samples=400",
    "evaluation.eval_every=5",
    "training.max_local_steps=4",
    "deadline.seconds=48",
]


# Control for the collapse diagnostics: every client at rank 16 = r_max (the fixed scheduler), i.e. plain
# FedAvg with no zero padding, so whatever effective rank it ends with is the update's own, not an artefact
# of mixing ranks (slow clients miss the deadline at rank 16 and contribute partial work).
CONTROL = "fixed_r16"


def config_for(task: str, scheduler: str) -> tuple[Path, list[str]]:
    if task == "noniid":
        sched = (
            ["federation.scheduler.type=fixed", "federation.scheduler.r_bar=16"]
            if scheduler == CONTROL
            else [f"federation.scheduler.type={scheduler}"]
        )
        return ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml", sched
    return ROOT / "configs" / "experiments" / "glue" / f"{task}_{scheduler}.yaml", list(GLUE_SETS)


def run_config(task: str, aggregator: str, scheduler: str, seed: int, out_dir: Path):
    """The resolved Config of one run."""
    from fedranklite.config.files import load_config

    config, sets = config_for(task, scheduler)
    return load_config(
        config,
        sets
        + [
            f"federation.aggregation={aggregator}",
            f"seed={seed}",
            f"experiment_name={run_name(task, aggregator, scheduler, seed)}",
            f"output_dir={out_dir}",
            "metrics.checkpoint=false",
            *EXTRA_SETS,
        ],
    )


def run_settings(cfg) -> dict:
    """What a run ran with: its resolved config flattened to dotted keys, less where its files went. A recorded
    run counts as done only when these are what it would run with now."""
    from fedranklite.config.files import flatten

    tree = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "experiment_name")}
    return json.loads(json.dumps(flatten(tree), default=str))


def run_one(task: str, aggregator: str, scheduler: str, seed: int, out_dir: Path) -> dict:
    from fedranklite.run.engine import build_engine

    cfg = run_config(task, aggregator, scheduler, seed, out_dir)
    engine = build_engine(cfg)
    summary = engine.run().to_json()  # as metrics.json holds it
    energy = engine.state.records[-1].rank_energy
    group = next(iter(energy.values())) if energy else None
    tail_share = upper_half_share(group["energy"]) if group else None
    return {
        "task": task,
        "aggregator": aggregator,
        "scheduler": scheduler,
        "seed": seed,
        "metric": summary["metric"],
        "final_score": summary["final_score"],
        "best_score": summary["best_score"],
        "time_to_target": summary["time_to_target"],
        "target": summary["target"],
        "bytes_up_per_client_round": summary["bytes"]["up_per_client_per_round"],
        "deadline_compliance_pct": summary["deadline_compliance_pct"],
        "block_effective_rank": group["block_effective_rank"] if group else None,
        "effective_rank": group["effective_rank"] if group else None,
        "upper_half_energy_share": tail_share,
        "sim_time_total": summary["sim_time_total"],
        "wall_time_total": summary["wall_time_total"],
        "trajectory": trajectory(cfg.results_dir),
        "pricing": summary.get("pricing"),
        "settings": run_settings(cfg),
    }


WORK = ROOT / "results" / "bench_aggregators"
QUICK_WORK = ROOT / "results" / "bench_aggregators_quick"
QUICK_SETS = ["federation.num_rounds=2", "training.max_local_steps=2", "evaluation.max_samples=64"]
EXTRA_SETS: list[str] = []  # overrides after every run's own (--quick: QUICK_SETS)


def run_key(r: dict) -> tuple:
    return r["task"], r["aggregator"], r["scheduler"], r["seed"]


def run_name(task: str, aggregator: str, scheduler: str, seed: int) -> str:
    return f"agg_{task}_{aggregator}_{scheduler}_s{seed}"


def run_dir(r: dict) -> Path:
    return WORK / run_name(*run_key(r))


def upper_half_share(energy: list[float]) -> float:
    """Share of the rank blocks above r_max/2 (blocks 9-16 at r_max 16) in a group's adapter energy."""
    e = np.asarray(energy, dtype=np.float64)
    return float(e[len(e) // 2 :].sum() / e.sum()) if e.sum() > 0 else 0.0


def trajectory(folder: Path) -> list[dict] | None:
    """Per round collapse indicators of the first LoRA module group, read from a run's rounds.jsonl."""
    path = folder / "rounds.jsonl"
    if not path.exists():
        return None
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        energy = rec.get("rank_energy") or {}
        if not energy:
            continue
        group, g = next(iter(energy.items()))
        out.append(
            {
                "round": rec["round"],
                "score": rec.get("score"),
                "group": group,
                "effective_rank": g["effective_rank"],
                "block_effective_rank": g["block_effective_rank"],
                "upper_half_energy_share": upper_half_share(g["energy"]),
            }
        )
    return out or None


def plot_mean(axes, trajs: list[list[dict]], **style) -> None:
    """Mean over seeds of the effective rank (left) and upper-half energy share (right) per round."""
    n = min(len(t) for t in trajs)
    rounds = [t["round"] for t in trajs[0][:n]]
    for ax, key in zip(axes, ["effective_rank", "upper_half_energy_share"]):
        ax.plot(rounds, np.mean([[t[key] for t in tr[:n]] for tr in trajs], axis=0), marker="o", markersize=3, **style)


def plot_collapse(runs: list[dict], path: Path, task: str = "noniid") -> Path | None:
    """Effective rank of the global B A and the upper-half block energy share vs round, mean over seeds,
    one line per aggregator, one row per scheduler."""
    runs = [r for r in runs if r["task"] == task and r.get("trajectory")]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(SCHEDULERS), 2, figsize=(11, 3.6 * len(SCHEDULERS)), squeeze=False)
    for row, sched in enumerate(SCHEDULERS):
        for agg in AGGREGATORS:
            trajs = [r["trajectory"] for r in runs if r["scheduler"] == sched and r["aggregator"] == agg]
            if not trajs:
                continue
            # stack compresses to the same optimal rank-r_max factorization as svd: draw it dashed on top
            plot_mean(axes[row], trajs, label=agg, **({"linestyle": "--"} if agg == "stack" else {}))
        control = [r["trajectory"] for r in runs if r["scheduler"] == CONTROL]
        if control:
            plot_mean(axes[row], control, label="control: fedavg, all at r_max", color="black", linestyle="--")
        axes[row][0].set_ylabel(f"{sched}: effective rank of B A")
        axes[row][1].set_ylabel(f"{sched}: energy share, blocks > r_max/2")
        for ax in axes[row]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels))
    group = runs[0]["trajectory"][0]["group"]
    fig.suptitle(f"{task}: rank collapse of the global adapter ({group} modules, mean over seeds)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collapse_table(runs: list[dict]) -> list[str]:
    groups: dict = {}
    for r in runs:
        if r.get("trajectory"):
            groups.setdefault((r["task"], r["scheduler"], r["aggregator"]), []).append(r["trajectory"])
    if not groups:
        return []
    lines = [
        "",
        "Rank collapse, first LoRA module group (mean over seeds): effective rank of the global B A "
        "(exp entropy of its singular values) and the energy share of rank blocks above r_max/2, "
        "after round 1 and after the last round:",
        "",
        "| task | scheduler | aggregator | eff. rank, round 1 | eff. rank, last | upper-half share, round 1 | "
        "upper-half share, last |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, sched, agg), trajs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], AGGREGATORS.index(kv[0][2]))
    ):
        first = [t[0] for t in trajs]
        last = [t[-1] for t in trajs]
        lines.append(
            f"| {task} | {sched} | {agg} | {np.mean([f['effective_rank'] for f in first]):.2f} | "
            f"{np.mean([x['effective_rank'] for x in last]):.2f} | "
            f"{np.mean([f['upper_half_energy_share'] for f in first]):.3f} | "
            f"{np.mean([x['upper_half_energy_share'] for x in last]):.3f} |"
        )
    return lines


def late_score(r: dict, last: int = 3) -> float:
    """Mean of the last `last` evaluated scores: a single final evaluation on Dirichlet(0.1) clients swings
    by +-0.1 from round to round (the global model flips between majority classes)."""
    scores = [t["score"] for t in (r.get("trajectory") or []) if t.get("score") is not None]
    return float(np.mean(scores[-last:])) if scores else r["final_score"]


def markdown(runs: list[dict]) -> str:
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["task"], r["scheduler"], r["aggregator"]), []).append(r)
    lines = [
        "Settings: noniid = configs/experiments/lite_noniid_deadline.yaml as shipped; rte / mrpc = "
        f"configs/experiments/glue/<task>_<scheduler>.yaml with {', '.join(GLUE_SETS)}. "
        f"{CONTROL}: fedavg with every client at rank 16 (collapse control). Compliance = share of rounds in "
        "which every selected client met the deadline. Each run's resolved config is under `settings` in the "
        "JSON and its tiers' pricing under `pricing`.",
        "",
        "| task | scheduler | aggregator | seeds | final score | mean of last 3 evals | best score "
        "| time-to-target (sim s; reached) | "
        "kB up per client-round | compliance % | block eff. rank | upper-half energy share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {t: i for i, t in enumerate(["noniid", "rte", "mrpc"])}
    for (task, sched, agg), rs in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1], AGGREGATORS.index(kv[0][2]))
    ):
        reached = [r["time_to_target"]["sim_seconds"] for r in rs if r["time_to_target"]["sim_seconds"] is not None]
        ttt = f"{np.mean(reached):.0f} ({len(reached)}/{len(rs)})" if reached else f"not reached (0/{len(rs)})"
        lines.append(
            f"| {task} | {sched} | {agg} | {len(rs)} | {rs[0]['metric']} {mean_sd([r['final_score'] for r in rs])} | "
            f"{mean_sd([late_score(r) for r in rs])} | {mean_sd([r['best_score'] for r in rs])} | {ttt} | "
            f"{np.mean([r['bytes_up_per_client_round'] for r in rs]) / 1e3:.0f} | "
            f"{np.mean([r['deadline_compliance_pct'] for r in rs]):.0f} | "
            f"{mean_sd([r['block_effective_rank'] for r in rs])} | "
            f"{mean_sd([r['upper_half_energy_share'] for r in rs])} |"
        )
    lines += ["", "Who wins where (mean final score):", ""]
    for task in sorted({k[0] for k in groups}, key=lambda t: order.get(t, 9)):
        for sched in SCHEDULERS:
            # aggregators whose runs scored identically seed by seed (stack and svd reach the same optimal
            # factorization) are one candidate, named together
            by_scores: dict = {}
            for (t, s, agg), rs in sorted(groups.items(), key=lambda kv: AGGREGATORS.index(kv[0][2])):
                if t == task and s == sched:
                    scores = tuple(round(r["final_score"], 9) for r in sorted(rs, key=lambda r: r["seed"]))
                    by_scores.setdefault(scores, []).append(agg)
            cands = sorted(
                ((float(np.mean(sc)), sample_sd(sc), " = ".join(aggs), len(sc)) for sc, aggs in by_scores.items()),
                reverse=True,
            )
            if len(cands) < 2:
                continue
            (m1, s1, a1, n1), (m2, s2, a2, n2) = cands[0], cands[1]
            if min(n1, n2) < 2:
                clear = "single seed, no spread to compare with"
            else:
                clear = "clearly (gap > 1 sd)" if m1 - m2 > max(s1, s2) else "within noise (gap <= 1 sd)"
            ml, sl, al, nl = cands[-1]
            last_gap = (
                ""
                if min(n1, nl) < 2
                else (" (clearly below the best)" if m1 - ml > max(s1, sl) else " (within noise of the best)")
            )
            lines.append(
                f"- {task} / {sched}: {a1} {m1:.3f}, then {a2} {m2:.3f}: {clear}; last {al} {ml:.3f}{last_gap}"
            )
    lines += collapse_table(runs)
    return "\n".join(lines) + "\n"


def record(out: Path, rec: dict | None) -> list[dict]:
    """Add one run to the output JSON and rewrite the table. Several bench processes (one per task, each
    with one torch thread: the GLUE and non-IID presets use analytic simulated time, so running them side
    by side changes wall time only) share the file, so it is re-read under a lock before every write."""
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = json.loads(out.read_text())["runs"] if out.exists() else []
        if rec is not None:  # the new run replaces one recorded under other settings
            runs = [r for r in runs if run_key(r) != run_key(rec)] + [rec]
        for r in runs:  # records written before run_one kept the trajectory: read it from their folder
            if not r.get("trajectory"):
                r["trajectory"] = trajectory(run_dir(r))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(stamp({"runs": runs}, __file__), indent=1, default=float))
        tmp.replace(out)
        out.with_suffix(".md").write_text(markdown(runs) + f"\nWritten by `{script_name(__file__)}`.\n")
    return runs


def claim(task: str, agg: str, sched: str, seed: int, work: Path = WORK) -> bool:
    """Take a run for this process: False when another live process holds it (two processes writing one
    rounds.jsonl corrupt it). A claim file holds the owner's pid; a dead owner's claim is taken over."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{run_name(task, agg, sched, seed)}.claim"
    with open(work / "claims.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                owner = int(path.read_text())
                os.kill(owner, 0)
                if owner != os.getpid():
                    return False
            except PermissionError:
                return False  # alive, someone else's
            except (ValueError, ProcessLookupError):
                pass  # stale claim of a process that is gone
        path.write_text(str(os.getpid()))
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "aggregators.json"))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a check that the benchmark runs, not a result: noniid, one seed, fedavg and blockwise, "
        f"{' '.join(QUICK_SETS)}, run folders under {QUICK_WORK.relative_to(ROOT)}",
    )
    ap.add_argument("--tasks", default="noniid,rte,mrpc")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--aggregators", default=",".join(AGGREGATORS))
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="work through the plan from its end: a second process on the same task (each process "
        "uses one core) meets the first in the middle; both skip what the other has recorded",
    )
    ap.add_argument(
        "--control",
        action="store_true",
        help=f"also run the collapse control ({CONTROL}: fedavg with every client at r_max) on noniid",
    )
    args = ap.parse_args()
    work = WORK
    if args.quick:
        args.tasks, args.seeds, args.aggregators, work = "noniid", 1, "fedavg,blockwise", QUICK_WORK
        EXTRA_SETS[:] = QUICK_SETS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("FEDRANKLITE_GLUE_DIR"):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = [
        (task, agg, sched, seed)
        for task in args.tasks.split(",")
        if task
        for seed in range(args.seeds)
        for sched, agg in [(s, a) for s in SCHEDULERS for a in args.aggregators.split(",")]
        + ([(CONTROL, "fedavg")] if args.control and task == "noniid" else [])
    ]
    for task, agg, sched, seed in reversed(plan) if args.reverse else plan:
        runs = json.loads(out.read_text())["runs"] if out.exists() else []  # another process may have run it
        now = run_settings(run_config(task, agg, sched, seed, work))
        if any(run_key(r) == (task, agg, sched, seed) and r.get("settings") == now for r in runs):
            continue
        if not claim(task, agg, sched, seed, work):
            continue
        t0 = time.perf_counter()
        rec = run_one(task, agg, sched, seed, work)
        print(
            f"{task} {agg} {sched} seed {seed}: {rec['metric']} {rec['final_score']:.3f} "
            f"(block eff. rank {rec['block_effective_rank']}, {time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        record(out, rec)
    runs = record(out, None)
    for task in sorted({r["task"] for r in runs}):
        plot_collapse(runs, out.parent / f"rank_collapse_{task}.png", task)
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
