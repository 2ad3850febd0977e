"""A million simulated clients: the surrogate backend at N = 1,000,000, 1,000 selected a round, 100 rounds.

    python benchmarks/bench_surrogate_scale.py [--clients 1000000] [--per-round 1000] [--rounds 100]
        [--schedulers lite,cvx_bisect,fixed] [--profile-rounds 10] [--out benchmarks/results/surrogate_million.json]

The non-IID deadline experiment (configs/experiments/lite_noniid_deadline.yaml: 90 s deadline, use_partial,
tiers 30/30/40 %) with client training replaced by the shipped calibration
(configs/surrogate/minilm_profile_clock.json, fitted on a profile-time run) and 300 rows per client. Each scheduler
runs in a fresh process (its peak RSS is its own) and records:

- setup seconds (building the federation: tiers, hardware, rank caps of every client) and run seconds, wall
  and this process's CPU time (on a shared machine the wall time also counts the time other work holds the
  cores; the CPU time does not);
- peak RSS of the process (resource.getrusage, torch and numpy imports included);
- the schedulers' own cost per round: seconds in `scheduler.assign` and `scheduler.observe` (mean, median,
  max over the rounds), timed by wrapping the engine's scheduler; the rest of a round is the engine's;
- what the run simulated: total simulated seconds, stragglers (clients dropped at the deadline), unavailable
  clients, partial updates, bytes up and down, client and round compliance, final score.

`--profile-rounds K` first profiles K rounds of lite at the same size (cProfile) and stores where the time goes
(setup vs rounds, the functions with the most own time). The budget this checks: <= 600 s and <= 8 GiB a run.
A cost benchmark: what it simulated is recorded to show the run did the work, not as a scheduler comparison (the
surrogate's error against real training is measured in experiments/surrogate_heldout/).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py: machine facts, results folder, "script" stamp)

CONFIG = common.ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
CALIBRATION = common.ROOT / "configs" / "surrogate" / "minilm_profile_clock.json"
SCHEDULERS = {
    "lite": ["federation.scheduler.type=lite"],
    "cvx_bisect": ["federation.scheduler.type=cvx", "federation.scheduler.solver=bisect"],
    "fixed": ["federation.scheduler.type=fixed"],
}
BUDGET_SECONDS = 600.0
BUDGET_RSS_MB = 8 * 1024.0


def config_sets(clients: int, per_round: int, rounds: int, out_dir: Path, name: str) -> list[str]:
    fast = medium = int(0.3 * clients)
    return [
        f"experiment_name={name}",
        f"output_dir={out_dir}",
        "engine.backend=surrogate",
        f"engine.surrogate.calibration={CALIBRATION}",
        "engine.surrogate.rows_per_client=300",
        f"tiers.gpu_fast.num_clients={fast}",
        f"tiers.gpu_medium.num_clients={medium}",
        f"tiers.cpu_slow.num_clients={clients - fast - medium}",
        f"federation.clients_per_round={per_round}",
        f"federation.num_rounds={rounds}",
        "metrics.client_records=columns",
        "metrics.checkpoint=false",
        f"metrics.summary_every={rounds}",
        "evaluation.stop_at_target=false",
    ]


def _timed(fn, into: list):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - began)

    return wrapper


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}


def run_one(sets: list[str]) -> dict:
    """One surrogate run in this process (a fresh subprocess of `main`)."""
    from fedranklite.backends.surrogate.engine import build_surrogate_engine
    from fedranklite.config.files import load_config

    cfg = load_config(CONFIG, sets)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began, cpu = time.perf_counter(), time.process_time()
    engine = build_surrogate_engine(cfg)
    setup, setup_cpu = time.perf_counter() - began, time.process_time() - cpu
    assign_s: list[float] = []
    observe_s: list[float] = []
    engine.scheduler.assign = _timed(engine.scheduler.assign, assign_s)
    engine.scheduler.observe = _timed(engine.scheduler.observe, observe_s)
    began, cpu = time.perf_counter(), time.process_time()
    summary = engine.run().to_json()
    wall, run_cpu = time.perf_counter() - began, time.process_time() - cpu
    records = engine.state.records
    status = [s for rec in records for s in rec.clients.status]
    return {
        "clients": engine.fed.num_clients,
        "per_round": cfg.federation.clients_per_round,
        "rounds": summary["rounds_completed"],
        "setup_seconds": setup,
        "run_seconds": wall,
        "total_seconds": setup + wall,
        "seconds_per_round": wall / max(len(records), 1),
        "setup_cpu_seconds": setup_cpu,  # this process's CPU time: what other work on the machine does not inflate
        "run_cpu_seconds": run_cpu,
        "cpu_seconds_per_round": run_cpu / max(len(records), 1),
        "load_average_after": os.getloadavg(),
        "round_wall_seconds": _spread([rec.wall_seconds for rec in records]),
        "scheduler_assign_seconds_per_round": _spread(assign_s),
        "scheduler_observe_seconds_per_round": _spread(observe_s),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_after_imports_mb": rss_imports,
        "simulated": {
            "sim_seconds_total": summary["sim_time_total"],
            "stragglers": sum(len(rec.stragglers) for rec in records),
            "client_statuses": {s: status.count(s) for s in sorted(set(status))},
            "out_of_memory": sum(len(rec.out_of_memory) for rec in records),
            "bytes_up": sum(rec.bytes_up for rec in records),
            "bytes_down": sum(rec.bytes_down for rec in records),
            "client_compliance_pct": summary["client_compliance_pct"],
            "round_compliance_pct": summary["deadline_compliance_pct"],
            "final_score": summary["final_score"],
            "mean_rank": statistics.fmean(r["rank_mean"] for r in summary["rounds"]),
        },
    }


def profile(sets: list[str], top: int = 15) -> dict:
    """cProfile of one run (setup and rounds): where the time goes."""
    from fedranklite.backends.surrogate.engine import build_surrogate_engine
    from fedranklite.config.files import load_config

    cfg = load_config(CONFIG, sets)
    prof = cProfile.Profile()
    began = time.perf_counter()
    prof.enable()
    engine = build_surrogate_engine(cfg)
    setup = time.perf_counter() - began
    engine.run()
    prof.disable()
    total = time.perf_counter() - began
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{common.portable(file)}:{line}({func})", "calls": calls, "own_s": own, "cum_s": cum})
    rows.sort(key=lambda r: -r["own_s"])
    return {
        "scheduler": "lite",
        "rounds": cfg.federation.num_rounds,
        "setup_seconds_profiled": setup,
        "rounds_seconds_profiled": total - setup,
        "top_own_time": rows[:top],
    }


def _child(mode: str, sets: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, f"--{mode}", json.dumps(sets)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    facts = common.machine()
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import numpy

    return {**facts, "cpu_model": cpu, "numpy": numpy.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--per-round", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--schedulers", default=",".join(SCHEDULERS))
    ap.add_argument("--profile-rounds", type=int, default=10, help="0: no profile")
    ap.add_argument("--out", type=Path, default=common.RESULTS / "surrogate_million.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--profile", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one or args.profile:
        result = run_one(json.loads(args.one)) if args.one else profile(json.loads(args.profile))
        print(json.dumps(result))
        return
    names = [s for s in args.schedulers.split(",") if s]
    unknown = [s for s in names if s not in SCHEDULERS]
    if unknown:
        ap.error(f"--schedulers: unknown {unknown}; known: {', '.join(SCHEDULERS)}")
    began = time.perf_counter()
    payload: dict = {
        "config": CONFIG.relative_to(common.ROOT).as_posix(),
        "calibration": CALIBRATION.relative_to(common.ROOT).as_posix(),
        "clients": args.clients,
        "per_round": args.per_round,
        "rounds": args.rounds,
        "budget": {"seconds": BUDGET_SECONDS, "rss_mb": BUDGET_RSS_MB},
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile_rounds:
            sets = config_sets(args.clients, args.per_round, args.profile_rounds, Path(tmp), "profile_lite")
            payload["profile"] = _child("profile", sets + SCHEDULERS["lite"])
            p = payload["profile"]
            print(
                f"profile ({args.profile_rounds} rounds, lite): setup {p['setup_seconds_profiled']:.1f} s, "
                f"rounds {p['rounds_seconds_profiled']:.1f} s",
                flush=True,
            )
        runs = []
        for name in names:
            sets = config_sets(args.clients, args.per_round, args.rounds, Path(tmp), f"million_{name}")
            row = {"scheduler": name, **_child("one", sets + SCHEDULERS[name])}
            row["within_budget"] = row["total_seconds"] <= BUDGET_SECONDS and row["peak_rss_mb"] <= BUDGET_RSS_MB
            a = row["scheduler_assign_seconds_per_round"]["mean"]
            print(
                f"{name:<11} setup {row['setup_seconds']:.1f} s, run {row['run_seconds']:.1f} s "
                f"({row['seconds_per_round'] * 1000:.0f} ms/round, "
                f"CPU {row['cpu_seconds_per_round'] * 1000:.0f} ms/round, assign {a * 1000:.2f} ms), "
                f"peak RSS {row['peak_rss_mb']:.0f} MB, stragglers {row['simulated']['stragglers']}",
                flush=True,
            )
            runs.append(row)
    payload["runs"] = runs
    payload["benchmark_seconds"] = time.perf_counter() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(common.stamp({"benchmark": args.out.stem, **payload}, __file__), indent=2, allow_nan=False)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
