"""What-if surrogate: calibration on a real run, a check against reality at N = 10, and a scaling table.

    python benchmarks/bench_surrogate.py [--out benchmarks/results/surrogate.json] [--quick]

1. Calibrate: a real run of configs/experiments/lite_noniid_deadline.yaml (10 clients, analytic time,
   90 s deadline, use_partial) for CAL_ROUNDS rounds, then `calibrate` on its results folder.
2. Check at N = 10: the same config with engine.backend: surrogate vs the real run, per round: ranks
   (mean absolute difference per client), per-client simulated seconds, stragglers and compliance; for
   lite (ranks follow the loss drops) and cvx (ranks follow the time model only), on a seed the
   calibration did not see.
3. Scaling: N = 1k, 10k, 100k clients (tier shares 30/30/40 % as in base.yaml, 10 % of the clients per
   round) for lite, cvx (cvxpy), cvx (greedy) and fixed; each configuration in a fresh process (its peak
   RSS is its own): wall seconds per simulated round, peak memory, client-level and round-level
   compliance, simulated time-to-target, bytes per client-round. lite at 100k runs 100 rounds.
Writes JSON + a Markdown table + surrogate_scaling.png next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py: the "script" stamp and portable paths)

ROOT = common.ROOT
CONFIG = ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
CAL_ROUNDS = 6
SCHEDULERS = {
    "lite": ["federation.scheduler.type=lite"],
    "cvx_cvxpy": ["federation.scheduler.type=cvx", "federation.scheduler.solver=cvxpy"],
    "cvx_greedy": ["federation.scheduler.type=cvx", "federation.scheduler.solver=greedy"],
    "fixed": ["federation.scheduler.type=fixed"],
}


def reachable_target(calibration: Path) -> float:
    """70 % of the way from the fitted initial score to the fitted limit: a target every scheduler can
    reach in principle, so time-to-target separates them (the config's own 0.9 is above the non-IID fit's
    limit, which no surrogate run could reach)."""
    from fedranklite.backends.surrogate.engine import SurrogateFit

    fit = SurrogateFit.load(calibration)
    return round(fit.score_start + 0.7 * (fit.score_limit - fit.score_start), 4)


def scale_sets(n: int, rounds: int, calibration: Path, out_dir: Path, name: str) -> list[str]:
    fast, medium = int(0.3 * n), int(0.3 * n)
    return [
        f"experiment_name={name}",
        f"evaluation.target={reachable_target(calibration)}",
        f"output_dir={out_dir}",
        "engine.backend=surrogate",
        f"engine.surrogate.calibration={calibration}",
        "engine.surrogate.rows_per_client=300",
        f"tiers.gpu_fast.num_clients={fast}",
        f"tiers.gpu_medium.num_clients={medium}",
        f"tiers.cpu_slow.num_clients={n - fast - medium}",
        f"federation.clients_per_round={n // 10}",
        f"federation.num_rounds={rounds}",
        "metrics.client_records=columns",
        "metrics.checkpoint=false",
        f"metrics.summary_every={rounds}",
        "evaluation.stop_at_target=false",
    ]


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0), so that the peak measured
    after the run is the run's own and not the import of torch; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(sets: list[str]) -> dict:
    """One surrogate run in this process (called in a fresh subprocess by `scale`)."""
    import psutil

    from fedranklite.backends.surrogate.engine import build_surrogate_engine
    from fedranklite.config.files import load_config

    cfg = load_config(CONFIG, sets)
    rss_before = psutil.Process().memory_info().rss / 2**20  # after every import: the run's own growth is extra
    hwm_reset = reset_peak_rss()
    start = time.perf_counter()
    engine = build_surrogate_engine(cfg)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    summary = engine.run().to_json()  # as metrics.json holds it
    wall = time.perf_counter() - start
    rounds = summary["rounds_completed"]
    return {
        "clients": engine.fed.num_clients,
        "per_round": cfg.federation.clients_per_round,
        "rounds": rounds,
        "setup_seconds": setup,
        "wall_seconds": wall,
        "wall_per_round": wall / rounds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": rss_before,
        "rss_after_run_mb": psutil.Process().memory_info().rss / 2**20,
        "run_peak_rss_mb": peak_rss_since_reset() if hwm_reset else None,
        "client_compliance_pct": summary["client_compliance_pct"],
        "round_compliance_pct": summary["deadline_compliance_pct"],
        "time_to_target": summary["time_to_target"],
        "final_score": summary["final_score"],
        "sim_time_total": summary["sim_time_total"],
        "bytes_up_per_client_round": summary["bytes"]["up_per_client_per_round"],
        "mean_rank": float(np.mean([r["rank_mean"] for r in summary["rounds"]])),
    }


def scale(calibration: Path, out_dir: Path, sizes, rounds_for) -> list[dict]:
    rows = []
    for n in sizes:
        for sched, extra in SCHEDULERS.items():
            rounds = rounds_for(n, sched)
            sets = scale_sets(n, rounds, calibration, out_dir, f"scale_{sched}_{n}") + extra
            proc = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(sets)],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if proc.returncode != 0:
                raise RuntimeError(f"N={n} {sched}: {proc.stderr[-2000:]}")
            row = {"scheduler": sched, **json.loads(proc.stdout.strip().splitlines()[-1])}
            print(
                f"N={n:>6} {sched:<10} {row['wall_per_round']:.3f} s/round, peak {_run_peak(row)} MB, "
                f"client compliance {row['client_compliance_pct']:.1f} %, ttt {row['time_to_target']}",
                flush=True,
            )
            rows.append(row)
    return rows


def real_and_surrogate(seed: int, sched_sets: list[str], calibration: Path, out_dir: Path, rounds: int):
    from fedranklite.backends.surrogate.engine import build_surrogate_engine
    from fedranklite.config.files import load_config
    from fedranklite.run.engine import build_engine

    common = [
        f"seed={seed}",
        f"output_dir={out_dir}",
        f"federation.num_rounds={rounds}",
        "metrics.checkpoint=false",
        *sched_sets,
    ]
    real = build_engine(load_config(CONFIG, common + [f"experiment_name=check_real_{seed}"]))
    real.run()
    sur = build_surrogate_engine(
        load_config(
            CONFIG,
            common
            + [
                f"experiment_name=check_surrogate_{seed}",
                "engine.backend=surrogate",
                f"engine.surrogate.calibration={calibration}",
            ],
        )
    )
    sur.run()
    return real, sur


def compare(real, sur) -> dict:
    rank_diff, time_rel, strag_real, strag_sur, per_round = [], [], 0, 0, []
    for a, b in zip(real.state.records, sur.state.records):
        ra, rb = np.asarray(a.clients.rank), np.asarray(b.clients.rank)
        ta, tb = np.asarray(a.clients.sim_seconds), np.asarray(b.clients.sim_seconds)
        rank_diff.append(float(np.mean(np.abs(ra - rb))))
        time_rel.append(float(np.mean(np.abs(ta - tb) / ta)))
        strag_real += len(a.stragglers)
        strag_sur += len(b.stragglers)
        per_round.append(
            {
                "round": a.round,
                "ranks_real": ra.tolist(),
                "ranks_surrogate": rb.tolist(),
                "round_seconds_real": a.round_sim_seconds,
                "round_seconds_surrogate": b.round_sim_seconds,
                "stragglers_real": a.stragglers,
                "stragglers_surrogate": b.stragglers,
                "score_real": a.score,
                "score_surrogate": b.score,
            }
        )
    sr, ss = real.summary().to_json(), sur.summary().to_json()
    return {
        "mean_abs_rank_diff": float(np.mean(rank_diff)),
        "max_round_rank_diff": float(np.max(rank_diff)),
        "mean_rel_client_time_diff": float(np.mean(time_rel)),
        "round_compliance_real": sr["deadline_compliance_pct"],
        "round_compliance_surrogate": ss["deadline_compliance_pct"],
        "client_compliance_real": sr["client_compliance_pct"],
        "client_compliance_surrogate": ss["client_compliance_pct"],
        "stragglers_real": strag_real,
        "stragglers_surrogate": strag_sur,
        "sim_time_real": sr["sim_time_total"],
        "sim_time_surrogate": ss["sim_time_total"],
        "final_score_real": sr["final_score"],
        "final_score_surrogate": ss["final_score"],
        "rounds": per_round,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for sched in SCHEDULERS:
        pts = sorted((r for r in rows if r["scheduler"] == sched), key=lambda r: r["clients"])
        n = [r["clients"] for r in pts]
        axes[0].plot(n, [r["client_compliance_pct"] for r in pts], "o-", label=sched)
        axes[1].plot(n, [r["bytes_up_per_client_round"] / 1e3 for r in pts], "o-", label=sched)
        axes[2].plot(n, [r["time_to_target"]["sim_seconds"] or np.nan for r in pts], "o-", label=sched)
        axes[3].plot(n, [r["wall_per_round"] for r in pts], "o-", label=sched)
    for ax, title in zip(
        axes,
        [
            "client deadline compliance (%)",
            "kB up per client-round",
            "simulated time-to-target (s)",
            "wall seconds per simulated round",
        ],
    ):
        ax.set_xscale("log")
        ax.set_xlabel("clients N (10 % per round)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[3].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _run_peak(row: dict) -> str:
    """The run's own peak RSS and its growth over the RSS before the run (imports, config)."""
    if row.get("run_peak_rss_mb") is None:
        return "-"
    return f"{row['run_peak_rss_mb']:.0f} (+{row['run_peak_rss_mb'] - row['rss_before_run_mb']:.0f})"


def markdown(result: dict) -> str:
    lines = [
        "| N | scheduler | rounds | wall s / round | peak RSS MB during the run (growth over its start) "
        "| client compliance % | round compliance % | "
        "time-to-target (round / sim s) | final score | mean rank | kB up per client-round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["scaling"]:
        t = r["time_to_target"]
        ttt = "not reached" if t["round"] is None else f"{t['round']} / {t['sim_seconds']:.0f}"
        lines.append(
            f"| {r['clients']:,} | {r['scheduler']} | {r['rounds']} | {r['wall_per_round']:.3f} | "
            f"{_run_peak(r)} | {r['client_compliance_pct']:.1f} | {r['round_compliance_pct']:.0f} | "
            f"{ttt} | {r['final_score']:.3f} | {r['mean_rank']:.2f} | {r['bytes_up_per_client_round'] / 1e3:.0f} |"
        )
    lines.insert(
        0,
        f"Surrogate fitted on {result['fit']['source']['rounds']} real rounds of "
        f"{result['fit']['source']['experiment']}; time-to-target is to {result['target']} "
        f"(70 % of the way from the fitted S_0 {result['fit']['score_start']:.3f} to S* "
        f"{result['fit']['score_limit']:.3f}); 10 % of the clients per round, deadline 90 s, use_partial.\n",
    )
    lines += [
        "",
        "Check against a real run at N = 10 (seed not used for calibration):",
        "",
        "| scheduler | mean abs rank diff | rel. client time diff | stragglers real / surrogate | "
        "round compliance real / surrogate % | final score real / surrogate |",
        "|---|---|---|---|---|---|",
    ]
    for sched, c in result["check"].items():
        lines.append(
            f"| {sched} | {c['mean_abs_rank_diff']:.2f} | {c['mean_rel_client_time_diff']:.3f} | "
            f"{c['stragglers_real']} / {c['stragglers_surrogate']} | {c['round_compliance_real']:.0f} / "
            f"{c['round_compliance_surrogate']:.0f} | {c['final_score_real']:.3f} / {c['final_score_surrogate']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(common.RESULTS / "surrogate.json"))
    parser.add_argument("--work", default="/tmp/fedranklite_bench_surrogate")
    parser.add_argument("--calibration", help="reuse this surrogate.json instead of a new calibration run")
    parser.add_argument("--quick", action="store_true", help="N = 1k, 10k only, 20 rounds (a smoke test)")
    parser.add_argument(
        "--rescale",
        action="store_true",
        help="keep the calibration and N = 10 check of --out, re-run only the scaling table",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    import torch

    torch.set_num_threads(1)
    from fedranklite.backends.surrogate.engine import SurrogateFit, calibrate
    from fedranklite.config.files import load_config
    from fedranklite.run.engine import build_engine

    work = Path(args.work)
    out = Path(args.out)
    sizes = [1000, 10000] if args.quick else [1000, 10000, 100000]
    rounds_for = lambda n, s: 20 if args.quick else (100 if (s == "lite" or n < 100000) else 30)  # noqa: E731
    if args.rescale:
        result = json.loads(out.read_text())
        work.mkdir(parents=True, exist_ok=True)
        calibration = SurrogateFit(**result["fit"]).save(work / "surrogate.json")
        result["scaling"] = scale(calibration, work, sizes, rounds_for)
        return write(result, out)
    result: dict = {"config": str(CONFIG.relative_to(ROOT)), "cal_rounds": CAL_ROUNDS}
    start = time.perf_counter()
    if args.calibration:
        calibration = Path(args.calibration)
    else:
        cfg = load_config(
            CONFIG,
            [
                f"output_dir={work}",
                "experiment_name=calibration",
                f"federation.num_rounds={CAL_ROUNDS}",
                "metrics.checkpoint=false",
            ],
        )
        build_engine(cfg).run()
        fit = calibrate(cfg.results_dir)
        calibration = fit.save(work / "surrogate.json")
        result["calibration_seconds"] = time.perf_counter() - start
    result["fit"] = SurrogateFit.load(calibration).__dict__
    result["target"] = reachable_target(calibration)
    result["check"] = {}
    for sched in ("lite", "cvx_greedy"):
        real, sur = real_and_surrogate(1, SCHEDULERS[sched], calibration, work, CAL_ROUNDS)
        result["check"][sched] = compare(real, sur)
        print(sched, {k: v for k, v in result["check"][sched].items() if k != "rounds"}, flush=True)
    result["scaling"] = scale(calibration, work, sizes, rounds_for)
    result["total_seconds"] = time.perf_counter() - start
    write(result, out)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    result = common.stamp(json.loads(json.dumps(result, default=float)), __file__)  # script key, portable paths
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result) + "\nWritten by `benchmarks/bench_surrogate.py`.\n")
    plot(result["scaling"], out.with_name("surrogate_scaling.png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
