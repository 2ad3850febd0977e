"""Scheduler speed: lite at N = 10 .. 100,000 and cvx (cvxpy and the greedy fallback) at N = 10 .. 1,000.

    python benchmarks/bench_schedulers.py [--out benchmarks/results/schedulers.json] [--repeats 5]

Speed is checked here, not in unit tests (no timed unit tests). Each figure is the best of `repeats`
runs of one `assign` (lite: after one `observe` of every client, so scores are real), in milliseconds,
with a synthetic three-tier population like configs/base.yaml. lite also reports the number of
integer-correction passes (bounded by r_max - r_min + 1 whatever N is) and ms per 1,000 clients,
which stays roughly flat if lite is O(N). The whole run takes well under a minute.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fedranklite.schedulers import Clients, Reports, repair_with_passes
from fedranklite.schedulers import lite as lite_mod
from fedranklite.schedulers.cvx import CvxScheduler
from fedranklite.schedulers.lite import LiteScheduler

R_MIN, R_MAX, R_BAR = 2, 16, 8
LITE_SIZES = [10, 100, 1_000, 10_000, 100_000]
CVX_SIZES = [10, 100, 1_000]


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
    reports = Reports.of(clients.cid, 8, rng.normal(0.1, 0.2, n), rng.lognormal(3, 1, n) * clients.compute_factor,
                         rng.random(n) < 0.1)
    observe_ms = best_ms(lambda: s.observe(reports), repeats)
    assign_ms = best_ms(lambda: s.assign(clients), repeats)
    lo, hi = s.bounds(clients)
    score = s.scores(clients)
    ranks, passes = repair_with_passes(score / score.sum() * s.budget(n), lo, hi, s.budget(n))
    assert np.array_equal(ranks, s.assign(clients))
    return {"n": n, "assign_ms": assign_ms, "observe_ms": observe_ms, "assign_ms_per_1000_clients": assign_ms / n * 1e3,
            "correction_passes": passes, "pass_bound": R_MAX - R_MIN + 1, "rank_sum": int(ranks.sum()),
            "budget": s.budget(n)}


def bench_cvx(n: int, solver: str, repeats: int) -> dict:
    clients = population(n)
    s = CvxScheduler(R_MIN, R_MAX, R_BAR, solver=solver)
    ms = best_ms(lambda: s.assign(clients), repeats)
    ranks = s.assign(clients)
    return {"n": n, "solver": solver, "method_used": s.last_method, "notes": list(s.notes), "assign_ms": ms,
            "max_predicted_time_s": float(clients.predicted_time(ranks).max()), "rank_sum": int(ranks.sum())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "schedulers.json"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    assert lite_mod.LiteScheduler is LiteScheduler
    try:
        import cvxpy
        cvxpy_version = cvxpy.__version__
    except ImportError:
        cvxpy_version = None
    started = time.perf_counter()
    lite_rows = [bench_lite(n, args.repeats) for n in LITE_SIZES]
    cvx_rows = [bench_cvx(n, solver, args.repeats) for n in CVX_SIZES for solver in ("auto", "greedy")]
    result = {
        "benchmark": "schedulers",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "numpy": np.__version__,
                    "cvxpy": cvxpy_version},
        "settings": {"r_min": R_MIN, "r_max": R_MAX, "r_bar": R_BAR, "repeats": args.repeats, "unit": "ms, best of repeats"},
        "lite": lite_rows,
        "cvx": cvx_rows,
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in lite_rows:
        print(f"lite  N={row['n']:>7}: assign {row['assign_ms']:9.3f} ms "
              f"({row['assign_ms_per_1000_clients']:.3f} ms/1k clients, {row['correction_passes']} passes)")
    for row in cvx_rows:
        print(f"cvx   N={row['n']:>7} solver={row['solver']:<6} ({row['method_used']}): {row['assign_ms']:9.3f} ms, "
              f"max predicted time {row['max_predicted_time_s']:.3f} s")
    print(f"wrote {out} in {result['total_seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
