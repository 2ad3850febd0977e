"""Scheduler speed: lite, and cvx with each of its solvers (bisect, the default; greedy; cvxpy via
`solver: auto`), at N = 10 .. 100,000.

    python benchmarks/bench_schedulers.py [--out benchmarks/results/schedulers.json] [--repeats 5]

Speed is checked here, not in unit tests (no timed unit tests). Each figure is one `assign` (lite:
after one `observe` of every client, so scores are real) in milliseconds of this process's CPU time,
one thread: the best of `repeats` means, each mean over as many calls as last ~20 ms (one call when a
call takes longer), after a warm-up call. The population is synthetic, three tiers like
configs/base.yaml. lite also reports the number of integer-correction passes (bounded by
r_max - r_min + 1 whatever N is) and ms per 1,000 clients, which stays roughly flat if lite is O(N).
The cvx rows check that the three solvers reach the same max predicted round time at every N (all are
exact). cvxpy runs up to CVXPY_MAX_N clients (it takes seconds a call at 100,000: practical here, not
per round of a long run). The whole run takes about a minute, most of it cvxpy and the greedy at N = 100,000.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, stamp  # noqa: E402

from fedranklite.federation.schedulers import Clients, Reports, repair_with_passes  # noqa: E402
from fedranklite.federation.schedulers import lite as lite_mod  # noqa: E402
from fedranklite.federation.schedulers.cvx import CvxScheduler  # noqa: E402
from fedranklite.federation.schedulers.lite import LiteScheduler  # noqa: E402

R_MIN, R_MAX, R_BAR = 2, 16, 8
LITE_SIZES = [10, 100, 1_000, 10_000, 100_000]
CVX_SIZES = [10, 100, 1_000, 10_000, 100_000]
CVX_SOLVERS = ("bisect", "greedy", "auto")  # auto = cvxpy (greedy if cvxpy is missing or fails)
CVXPY_MAX_N = 100_000  # ~1.5 s a call at 100,000 on the reference machine: still practical for the bench


def population(n: int, seed: int = 0) -> Clients:
    rng = np.random.default_rng(seed)
    cf = rng.choice([1.0, 0.7, 0.15], size=n, p=[0.3, 0.3, 0.4])
    cap = np.where(cf == 0.15, 8, R_MAX)  # the slow tier's memory holds less
    intercept = rng.uniform(5, 15, n) / cf
    slope = rng.uniform(0.2, 0.6, n) / cf
    return Clients.of(np.arange(n), cap, cf, intercept, slope)


def best_ms(fn, repeats: int) -> float:
    """Best over `repeats` of the mean time per call, each measured over enough calls to last ~20 ms
    (after a warm-up call), in process CPU time so other load on a shared machine does not count."""
    clock = time.process_time
    t0 = clock()
    fn()
    calls = max(1, int(0.02 / max(clock() - t0, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(calls):
            fn()
        times.append((clock() - t0) / calls)
    return 1e3 * min(times)


def bench_lite(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(n)
    clients = population(n)
    s = LiteScheduler(R_MIN, R_MAX, R_BAR)
    reports = Reports.of(
        clients.cid, 8, rng.normal(0.1, 0.2, n), rng.lognormal(3, 1, n) * clients.compute_factor, rng.random(n) < 0.1
    )
    observe_ms = best_ms(lambda: s.observe(reports), repeats)
    assign_ms = best_ms(lambda: s.assign(clients), repeats)
    lo, hi = s.bounds(clients)
    score = s.scores(clients)
    ranks, passes = repair_with_passes(score / score.sum() * s.budget(n), lo, hi, s.budget(n))
    assert np.array_equal(ranks, s.assign(clients))
    return {
        "n": n,
        "assign_ms": assign_ms,
        "observe_ms": observe_ms,
        "assign_ms_per_1000_clients": assign_ms / n * 1e3,
        "correction_passes": passes,
        "pass_bound": R_MAX - R_MIN + 1,
        "rank_sum": int(ranks.sum()),
        "budget": s.budget(n),
    }


def bench_cvx(n: int, solver: str, repeats: int) -> dict:
    clients = population(n)
    s = CvxScheduler(R_MIN, R_MAX, R_BAR, solver=solver)
    ms = best_ms(lambda: s.assign(clients), repeats)
    ranks = s.assign(clients)
    return {
        "n": n,
        "solver": solver,
        "method_used": s.last_method,
        "notes": list(s.notes),
        "assign_ms": ms,
        "assign_ms_per_1000_clients": ms / n * 1e3,
        "max_predicted_time_s": float(clients.predicted_time(ranks).max()),
        "rank_sum": int(ranks.sum()),
        "budget": s.budget(n),
    }


def by_method(lite_rows: list[dict], cvx_rows: list[dict]) -> dict:
    """ms per assign, {method: {n: ms}}: lite, and cvx by the path that actually ran (bisect, greedy, cvxpy)."""
    out = {"lite": {row["n"]: row["assign_ms"] for row in lite_rows}}
    for row in cvx_rows:
        out.setdefault(row["method_used"], {})[row["n"]] = row["assign_ms"]
    return out


def same_max_time(cvx_rows: list[dict]) -> dict:
    """{n: whether every cvx solver run at N reached the same max predicted time (exactly)}."""
    times: dict[int, set] = {}
    for row in cvx_rows:
        times.setdefault(row["n"], set()).add(row["max_predicted_time_s"])
    return {n: len(t) == 1 for n, t in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "schedulers.json"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one repeat (a check that the benchmark runs, not a result)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
    assert lite_mod.LiteScheduler is LiteScheduler
    try:
        import cvxpy

        cvxpy_version = cvxpy.__version__
    except ImportError:
        cvxpy_version = None
    started = time.perf_counter()
    lite_rows = [bench_lite(n, args.repeats) for n in LITE_SIZES]
    cvx_rows = [
        bench_cvx(n, solver, args.repeats)
        for n in CVX_SIZES
        for solver in CVX_SOLVERS
        if solver != "auto" or n <= CVXPY_MAX_N
    ]
    result = {
        "benchmark": "schedulers",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "cvxpy": cvxpy_version,
        },
        "settings": {
            "r_min": R_MIN,
            "r_max": R_MAX,
            "r_bar": R_BAR,
            "repeats": args.repeats,
            "unit": "ms, best of repeats of the mean per call (process CPU time, one thread)",
            "threads": 1,
            "cvx_sizes": CVX_SIZES,
            "cvx_solvers": list(CVX_SOLVERS),
            "cvxpy_max_n": CVXPY_MAX_N,
            "cvxpy_note": "cvxpy (solver auto) runs at every cvx size up to cvxpy_max_n; at 100,000 "
            "clients a call takes seconds (timed over a single call per repeat)",
        },
        "lite": lite_rows,
        "cvx": cvx_rows,
        "assign_ms_by_method": by_method(lite_rows, cvx_rows),
        "cvx_same_max_time": same_max_time(cvx_rows),
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamp(result, __file__), indent=2) + "\n")
    for row in lite_rows:
        print(
            f"lite  N={row['n']:>7}: assign {row['assign_ms']:9.3f} ms "
            f"({row['assign_ms_per_1000_clients']:.3f} ms/1k clients, {row['correction_passes']} passes)"
        )
    for row in cvx_rows:
        print(
            f"cvx   N={row['n']:>7} solver={row['solver']:<6} ({row['method_used']:<6}): {row['assign_ms']:9.3f} ms, "
            f"max predicted time {row['max_predicted_time_s']:.3f} s"
        )
    print("same max time across cvx solvers:", result["cvx_same_max_time"])
    print(f"wrote {out} in {result['total_seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
