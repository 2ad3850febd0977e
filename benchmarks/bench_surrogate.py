"""What-if surrogate: what the surrogate backend costs from 1,000 to 100,000 clients.

    python benchmarks/bench_surrogate.py [--out benchmarks/results/surrogate.json] [--quick] [--calibration FILE]

The non-IID deadline experiment (configs/experiments/lite_noniid_deadline.yaml: 90 s deadline, use_partial, hidden
per-client deviations) with client training replaced by the shipped calibration
(configs/surrogate/minilm_profile_clock.json, fitted on a profile-time run) and 300 rows per client. N = 1k, 10k and
100k clients (tier shares 30/30/40 % as in base.yaml, 10 % of the clients per round) for lite, cvx (cvxpy), cvx
(greedy) and fixed, each configuration in a fresh process (its peak RSS is its own): CPU and wall seconds per
simulated round, setup seconds, peak RSS during the run, and what the run simulated (client and round compliance,
mean rank, kB up per client-round) as a check that it did the work. 100 rounds up to N = 10k, ROUNDS_100K at 100k.

A cost table, not a scheduler comparison: how close the surrogate comes to real training (time, compliance, final
score) is measured against committed real runs in experiments/surrogate_heldout/.
Writes JSON + a Markdown table + surrogate_scaling.png next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py: the "script" stamp and portable paths)

ROOT = common.ROOT
CONFIG = ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
CALIBRATION = ROOT / "configs" / "surrogate" / "minilm_profile_clock.json"
ROUNDS = 100
ROUNDS_100K = 20  # the cost per round is flat over rounds (no per-round history grows with N)
SCHEDULERS = {
    "lite": ["federation.scheduler.type=lite"],
    "cvx_cvxpy": ["federation.scheduler.type=cvx", "federation.scheduler.solver=cvxpy"],
    "cvx_greedy": ["federation.scheduler.type=cvx", "federation.scheduler.solver=greedy"],
    "fixed": ["federation.scheduler.type=fixed"],
}


def scale_sets(n: int, rounds: int, calibration: Path, out_dir: Path, name: str) -> list[str]:
    fast, medium = int(0.3 * n), int(0.3 * n)
    return [
        f"experiment_name={name}",
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
    start, cpu = time.perf_counter(), time.process_time()
    engine = build_surrogate_engine(cfg)
    setup, setup_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    summary = engine.run().to_json()  # as metrics.json holds it
    wall, run_cpu = time.perf_counter() - start, time.process_time() - cpu
    rounds = summary["rounds_completed"]
    return {
        "clients": engine.fed.num_clients,
        "per_round": cfg.federation.clients_per_round,
        "rounds": rounds,
        "setup_seconds": setup,
        "setup_cpu_seconds": setup_cpu,
        "wall_seconds": wall,
        "wall_per_round": wall / rounds,
        "cpu_seconds": run_cpu,  # this process's CPU time: what other work on the machine does not inflate
        "cpu_per_round": run_cpu / rounds,
        "load_average_after": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": rss_before,
        "rss_after_run_mb": psutil.Process().memory_info().rss / 2**20,
        "run_peak_rss_mb": peak_rss_since_reset() if hwm_reset else None,
        "client_compliance_pct": summary["client_compliance_pct"],
        "round_compliance_pct": summary["deadline_compliance_pct"],
        "sim_time_total": summary["sim_time_total"],
        "bytes_up_per_client_round": summary["bytes"]["up_per_client_per_round"],
        "mean_rank": float(np.mean([r["rank_mean"] for r in summary["rounds"]])),
    }


def scale(calibration: Path, out_dir: Path, sizes, rounds_for) -> list[dict]:
    rows = []
    for n in sizes:
        for sched, extra in SCHEDULERS.items():
            rounds = rounds_for(n)
            sets = scale_sets(n, rounds, calibration, out_dir, f"scale_{sched}_{n}") + extra
            proc = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(sets)],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
            if proc.returncode != 0:
                raise RuntimeError(f"N={n} {sched}: {proc.stderr[-2000:]}")
            row = {"scheduler": sched, **json.loads(proc.stdout.strip().splitlines()[-1])}
            print(
                f"N={n:>6} {sched:<10} {row['cpu_per_round']:.3f} CPU s/round ({row['wall_per_round']:.3f} wall), "
                f"peak {_run_peak(row)} MB, client compliance {row['client_compliance_pct']:.1f} %",
                flush=True,
            )
            rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for sched in SCHEDULERS:
        pts = sorted((r for r in rows if r["scheduler"] == sched), key=lambda r: r["clients"])
        n = [r["clients"] for r in pts]
        axes[0].plot(n, [r["cpu_per_round"] for r in pts], "o-", label=sched)
        axes[1].plot(n, [r["run_peak_rss_mb"] or np.nan for r in pts], "o-", label=sched)
        axes[2].plot(n, [r["setup_cpu_seconds"] for r in pts], "o-", label=sched)
    for ax, title in zip(
        axes,
        ["CPU seconds per simulated round", "peak RSS during the run (MB)", "setup CPU seconds"],
    ):
        ax.set_xscale("log")
        ax.set_xlabel("clients N (10 % per round)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
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
    load = result["machine"]["load_average"]
    lines = [
        f"Cost of the surrogate backend: `{result['config']}` with client training replaced by "
        f"`{result['calibration']}`, 300 rows per client, 10 % of the clients per round (90 s deadline, "
        f"use_partial). One torch thread per run, each run in a fresh process, on a {result['machine']['cpus']}-core "
        f"CPU shared with other work (load average {load[0]:.1f} at the start): CPU seconds are this process's own, "
        "wall seconds include waiting for the cores. A cost table, not a scheduler comparison (the surrogate's "
        "error against real training: "
        "`experiments/surrogate_heldout/results.md`).",
        "",
        "| N | scheduler | rounds | CPU s / round | wall s / round | setup CPU s | peak RSS MB during the run (growth "
        "over its start) | client compliance % | round compliance % | mean rank | kB up per client-round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["scaling"]:
        lines.append(
            f"| {r['clients']:,} | {r['scheduler']} | {r['rounds']} | {r['cpu_per_round']:.3f} | "
            f"{r['wall_per_round']:.3f} | {r['setup_cpu_seconds']:.2f} | {_run_peak(r)} | "
            f"{r['client_compliance_pct']:.1f} | {r['round_compliance_pct']:.0f} | {r['mean_rank']:.2f} | "
            f"{r['bytes_up_per_client_round'] / 1e3:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(common.RESULTS / "surrogate.json"))
    parser.add_argument("--work", help="folder for the runs' output (default: a temporary folder, deleted)")
    parser.add_argument("--calibration", default=str(CALIBRATION), help="surrogate.json to run with")
    parser.add_argument("--quick", action="store_true", help="N = 1k, 10k only, 20 rounds (a smoke test)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    calibration = Path(args.calibration).resolve()
    sizes = [1000, 10000] if args.quick else [1000, 10000, 100000]
    rounds_for = lambda n: 20 if args.quick else (ROUNDS if n < 100000 else ROUNDS_100K)  # noqa: E731
    result: dict = {
        "config": CONFIG.relative_to(ROOT).as_posix(),
        "calibration": common.portable(str(calibration)),
        "quick": args.quick,
        "machine": common.machine(),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result["scaling"] = scale(calibration, work, sizes, rounds_for)
    result["total_seconds"] = time.perf_counter() - start
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    result = common.stamp(json.loads(json.dumps(result, default=float)), __file__)  # script key, portable paths
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result) + "\nWritten by `benchmarks/bench_surrogate.py`.\n")
    plot(result["scaling"], out.with_name("surrogate_scaling.png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
