"""Time-only regime map: round time, deadline compliance, accepted updates and bytes of the rank schedulers over
link speed (the communication/compute ratio at r_bar), link heterogeneity across tiers, deadline tightness and
straggler policy. No learning claim is read from these runs.

Each run is the project's own engine (`engine.backend: surrogate`): selection, schedulers, tiers with hidden
per-client deviations, deadline gate, straggler policy, bytes and aggregation are the real code; client training is
replaced by the surrogate calibrated in configs/surrogate/minilm_profile_clock.json, whose time model (seconds per
sample a + b * rank on the tiers' reference device) was fitted on a real run in the default profile time mode.

    python experiments/regime_map/run_map.py run        # resumable: appends one line per run to records.jsonl
    python experiments/regime_map/run_map.py pilot      # times one cell on a seed outside the study's
    python experiments/regime_map/run_map.py plan       # lists the cells

The grid and comparisons are fixed in SPEC.md (committed before the runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE_CONFIG = ROOT / "configs/experiments/lite_noniid_deadline.yaml"
CALIBRATION = ROOT / "configs/surrogate/minilm_profile_clock.json"
RECORDS = HERE / "records.jsonl"

SEEDS = list(range(1000, 1010))
SCHEDULERS = ("fixed", "uniform", "cvx", "lite")
ROUNDS = 10
R_BAR = 8
SAMPLES = 64  # planned samples of a full client: max_local_steps 4 x batch_size 16

TIERS = ("gpu_fast", "gpu_medium", "cpu_slow")
# nominal compute factors of the base tiers (configs/base.yaml)
COMPUTE = {"gpu_fast": 1.2, "gpu_medium": 0.23, "cpu_slow": 0.15}
LINKS = (5000.0, 50.0, 10.0, 3.0, 1.0)  # Mbit/s, both ways, every tier (before the heterogeneity pattern)
HETEROGENEITY = ("equal", "fast_uplink", "slow_links")
DEADLINES = (None, 1.0, 0.7)  # multiple of the fixed-rank-8 round time at the tiers' nominal figures
POLICIES = ("drop", "wait", "use_partial")
SIGMAS = {"speed_sigma": 0.3, "bandwidth_sigma": 0.3, "jitter_sigma": 0.1}  # lite_noniid_deadline's hidden deviations
POSITIVE_CONTROL = "positive_control"


def calibration() -> dict:
    return json.loads(CALIBRATION.read_text())


def tier_links(link: float, het: str) -> dict[str, tuple[float, float]]:
    """(uplink, downlink) Mbit/s per tier for one link level and heterogeneity pattern."""
    out = {t: (link, link) for t in TIERS}
    if het == "fast_uplink":  # the fastest computer behind an uplink ten times slower than everyone's link
        out["gpu_fast"] = (link / 10, link)
    elif het == "slow_links":  # the slowest computer also on the slowest links (both ways)
        out["cpu_slow"] = (link / 10, link / 10)
    elif het != "equal":
        raise ValueError(f"unknown heterogeneity {het!r}")
    return out


def comm(nbytes: float, mbps: float) -> float:
    return nbytes * 8.0 / (mbps * 1e6)


def round_time_at(rank: int, links: dict[str, tuple[float, float]], compute: dict[str, float], fit: dict) -> dict:
    """Predicted seconds of a full client of each tier at `rank` (nominal figures, no hidden deviation)."""
    nbytes = fit["head_bytes"] + rank * fit["bytes_per_rank"]
    out = {}
    for t in TIERS:
        up, down = links[t]
        compute_s = SAMPLES * (fit["sec_per_sample"] + fit["sec_per_sample_per_rank"] * rank) / compute[t]
        out[t] = {"compute_s": compute_s, "comm_s": comm(nbytes, up) + comm(nbytes, down)}
    return out


def cells() -> list[dict]:
    fit = calibration()
    out = []
    for link in LINKS:
        for het in HETEROGENEITY:
            links = tier_links(link, het)
            per_tier = round_time_at(R_BAR, links, COMPUTE, fit)
            t8 = max(v["compute_s"] + v["comm_s"] for v in per_tier.values())
            slow = per_tier["cpu_slow"]
            ratio = max(v["comm_s"] for v in per_tier.values()) / slow["compute_s"]
            for mult in DEADLINES:
                for policy in POLICIES if mult is not None else ("none",):
                    out.append(
                        {
                            "cell": f"L{link:g}_{het}_D{'none' if mult is None else f'{mult:g}'}_{policy}",
                            "link_mbps": link,
                            "heterogeneity": het,
                            "links": {t: {"up": u, "down": d} for t, (u, d) in links.items()},
                            "compute_factor": dict(COMPUTE),
                            "comm_compute_ratio": ratio,
                            "t8_nominal_s": t8,
                            "deadline_mult": mult,
                            "deadline_s": None if mult is None else mult * t8,
                            "policy": policy,
                            "sigmas": dict(SIGMAS),
                        }
                    )
    # positive control: the fast tier behind a 0.5 Mbit/s uplink, the other tiers at half its compute factor,
    # no hidden deviation, a deadline between cvx's predicted round (fast tier at r_min) and fixed's, drop
    links = {"gpu_fast": (0.5, 97.61), "gpu_medium": (5000.0, 5000.0), "cpu_slow": (5000.0, 5000.0)}
    compute = {"gpu_fast": 1.2, "gpu_medium": 0.6, "cpu_slow": 0.6}
    per_tier = round_time_at(R_BAR, links, compute, fit)
    t8 = max(v["compute_s"] + v["comm_s"] for v in per_tier.values())
    out.append(
        {
            "cell": POSITIVE_CONTROL,
            "link_mbps": None,
            "heterogeneity": "fast_uplink_0.5",
            "links": {t: {"up": u, "down": d} for t, (u, d) in links.items()},
            "compute_factor": compute,
            "comm_compute_ratio": max(v["comm_s"] for v in per_tier.values()) / per_tier["cpu_slow"]["compute_s"],
            "t8_nominal_s": t8,
            "deadline_mult": 2.0 / t8,
            "deadline_s": 2.0,
            "policy": "drop",
            "sigmas": {"speed_sigma": 0.0, "bandwidth_sigma": 0.0, "jitter_sigma": 0.0},
        }
    )
    return out


def overrides(cell: dict, scheduler: str, seed: int, out_dir: Path) -> list[str]:
    sets = [
        f"seed={seed}",
        f"output_dir={out_dir}",
        f"experiment_name={cell['cell']}_{scheduler}_{seed}",
        f"federation.num_rounds={ROUNDS}",
        "federation.stop_after_empty_rounds=null",
        "engine.backend=surrogate",
        f"engine.surrogate.calibration={CALIBRATION}",
        "metrics.checkpoint=false",
        f"federation.scheduler.type={scheduler}",
        f"federation.scheduler.r_bar={R_BAR}",
        f"deadline.seconds={'null' if cell['deadline_s'] is None else repr(cell['deadline_s'])}",
        f"deadline.straggler_policy={'wait' if cell['policy'] == 'none' else cell['policy']}",
    ]
    if scheduler == "fixed":
        sets.append(f"federation.scheduler.rank={R_BAR}")
    for t in TIERS:
        sets += [
            f"tiers.{t}.uplink_mbps={cell['links'][t]['up']!r}",
            f"tiers.{t}.downlink_mbps={cell['links'][t]['down']!r}",
            f"tiers.{t}.compute_factor={cell['compute_factor'][t]!r}",
        ]
        sets += [f"tiers.{t}.{k}={v!r}" for k, v in cell["sigmas"].items()]
    return sets


_ROWS: dict = {}


def _cached_partition_sizes(cfg):
    """The surrogate's rows per client depend only on the data section, the seed and the client count (stage 1
    of `prepare`, a Dirichlet split that costs most of a run's time): computed once per seed, not per run."""
    from fedranklite.backends.surrogate import engine

    key = (cfg.seed, json.dumps(cfg.to_dict()["data"], sort_keys=True), len(cfg.client_tiers()))
    if key not in _ROWS:
        _ROWS[key] = engine._uncached_partition_sizes(cfg)
    return _ROWS[key].copy()


def run_one(cell: dict, scheduler: str, seed: int) -> dict:
    from fedranklite.backends.surrogate import engine
    from fedranklite.backends.surrogate.engine import build_surrogate_engine

    if not hasattr(engine, "_uncached_partition_sizes"):
        engine._uncached_partition_sizes = engine.partition_sizes
        engine.partition_sizes = _cached_partition_sizes
    from fedranklite.config.files import load_config

    scratch = Path(tempfile.mkdtemp(prefix="regime_map_"))
    try:
        cfg = load_config(BASE_CONFIG, overrides(cell, scheduler, seed, scratch))
        start = time.perf_counter()
        summary = build_surrogate_engine(cfg).run().to_json()
        wall = time.perf_counter() - start
        lines = (cfg.results_dir / "rounds.jsonl").read_text().splitlines()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    records = [json.loads(x) for x in lines]
    clients = [c for r in records for c in r["clients"]]
    tiers = {}
    for t in TIERS:
        mine = [c for c in clients if c["tier"] == t]
        tiers[t] = {
            "client_rounds": len(mine),
            "accepted": sum(c["status"] == "accepted" for c in mine),
            "stragglers": sum(bool(c["straggler"]) for c in mine),
            "mean_rank": sum(c["rank"] for c in mine) / max(len(mine), 1),
        }
    rounds = summary["rounds_completed"]
    return {
        "cell": cell["cell"],
        "scheduler": scheduler,
        "seed": seed,
        "rounds": rounds,
        "mean_round_s": summary["sim_time_total"] / rounds,
        "client_compliance_pct": summary["client_compliance_pct"],
        "round_compliance_pct": summary["deadline_compliance_pct"],
        "accepted_pct": 100.0 * sum(c["status"] == "accepted" for c in clients) / len(clients),
        "bytes_per_round": (summary["bytes"]["up_total"] + summary["bytes"]["down_total"]) / rounds,
        "mean_rank": sum(c["rank"] for c in clients) / len(clients),
        "tiers": tiers,
        "wall_s": wall,
    }


def done_keys() -> set[tuple[str, str, int]]:
    if not RECORDS.exists():
        return set()
    out = set()
    for line in RECORDS.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.add((r["cell"], r["scheduler"], r["seed"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("run", "pilot", "plan"))
    ap.add_argument("--only", default=None, help="run only the cells whose name contains this")
    args = ap.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    grid = cells()
    if args.what == "plan":
        for c in grid:
            print(
                f"{c['cell']:40s} ratio {c['comm_compute_ratio']:8.3f}  T8 {c['t8_nominal_s']:7.3f} s  "
                f"deadline {c['deadline_s']}"
            )
        print(f"{len(grid)} cells x {len(SCHEDULERS)} schedulers x {len(SEEDS)} seeds = {len(grid) * 40} runs")
        return 0
    if args.what == "pilot":  # seed 7 is outside the study's seeds
        for cell in (grid[-1], next(c for c in grid if c["cell"] == "L5_fast_uplink_D0.7_drop")):
            for s in SCHEDULERS:
                r = run_one(cell, s, 7)
                print(json.dumps({k: r[k] for k in ("cell", "scheduler", "mean_round_s", "accepted_pct", "wall_s")}))
        return 0
    done = done_keys()
    grid = [grid[-1]] + grid[:-1]  # the positive control first
    todo = [
        (c, s, seed)
        for c in grid
        if args.only is None or args.only in c["cell"]
        for seed in SEEDS
        for s in SCHEDULERS
        if (c["cell"], s, seed) not in done
    ]
    print(f"{len(todo)} runs to do", flush=True)
    start = time.perf_counter()
    with RECORDS.open("a") as fh:
        for i, (c, s, seed) in enumerate(todo, 1):
            fh.write(json.dumps(run_one(c, s, seed)) + "\n")
            fh.flush()
            if i % 40 == 0:
                print(f"{i}/{len(todo)} runs, {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
