"""Statistics of the regime map (SPEC.md): per cell, each scheduler against fixed at r_bar on mean round time and
client compliance (paired by seed: mean difference with a BCa CI, Wilcoxon, Holm over the cell's 3 comparisons,
MDE); writes regime_map.json (every per-seed value), regime_map.md and regime_map.png.

    python experiments/regime_map/analyze.py [--out DIR]    # default DIR: benchmarks/results

`benchmarks/run_all.py regime_map` runs it too: it reads the committed records.jsonl only (no simulation), so the
map sits with the benchmark results while its spec, notes, runner and records stay with the study.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "benchmarks" / "results"
sys.path.insert(0, str(HERE))

import run_map  # noqa: E402

from fedranklite.study.stats import (  # noqa: E402
    holm,
    minimum_detectable_effect,
    paired_ci,
    paired_differences,
    wilcoxon_p,
)

OTHERS = ("uniform", "cvx", "lite")
METRICS = ("mean_round_s", "client_compliance_pct")
SHOWN = ("mean_round_s", "client_compliance_pct", "accepted_pct", "bytes_per_round", "mean_rank")
ALPHA = 0.05


def load_records() -> list[dict]:
    return [json.loads(x) for x in run_map.RECORDS.read_text().splitlines() if x.strip()]


def compare(runs: dict[str, dict[int, dict]], metric: str) -> dict[str, dict]:
    ref = {s: r[metric] for s, r in runs["fixed"].items()}
    out = {}
    for name in OTHERS:
        cell = {s: r[metric] for s, r in runs.get(name, {}).items()}
        _, d = paired_differences(cell, ref)
        est = paired_ci(cell, ref)
        out[name] = {
            "n": len(d),
            "mean_diff": est.mean,
            "ci": None if est.lo is None else [est.lo, est.hi],
            "wilcoxon_p": wilcoxon_p(d),
            "mde": minimum_detectable_effect(d),
            "fixed_mean": float(np.mean(list(ref.values()))) if ref else None,
        }
    adjusted = holm([out[n]["wilcoxon_p"] for n in OTHERS])
    for name, p in zip(OTHERS, adjusted):
        out[name]["holm_p"] = p
        out[name]["significant"] = p is not None and p < ALPHA
    return out


def winner(cmp_time: dict, means: dict) -> str:
    faster = [n for n in OTHERS if cmp_time[n]["significant"] and cmp_time[n]["mean_diff"] < 0]
    slower = [n for n in OTHERS if cmp_time[n]["significant"] and cmp_time[n]["mean_diff"] > 0]
    if faster:
        return min(faster, key=lambda n: means[n]["mean_round_s"])
    if slower:
        return "fixed"
    if all(cmp_time[n]["mean_diff"] == 0 and cmp_time[n]["mde"] == 0 for n in OTHERS):
        return "none: identical on every seed"
    mdes = [cmp_time[n]["mde"] for n in OTHERS if cmp_time[n]["mde"] is not None]
    return f"no difference larger than MDE ({max(mdes):.3g} s)" if mdes else "no data"


def fmt_diff(c: dict, unit: str = "") -> str:
    if c["mean_diff"] is None:
        return "-"
    ci = "" if c["ci"] is None else f" [{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}]"
    star = "*" if c["significant"] else ""
    return f"{c['mean_diff']:+.3g}{unit}{ci}{star}"


def analyse() -> dict:
    grid = {c["cell"]: c for c in run_map.cells()}
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for r in load_records():
        runs.setdefault(r["cell"], {}).setdefault(r["scheduler"], {})[r["seed"]] = r
    cells = []
    for name, meta in grid.items():
        cell_runs = runs.get(name, {})
        complete = all(len(cell_runs.get(s, {})) == len(run_map.SEEDS) for s in run_map.SCHEDULERS)
        entry = {
            **meta,
            "complete": complete,
            "runs": {s: {str(k): v for k, v in sorted(d.items())} for s, d in cell_runs.items()},
        }
        if complete:
            means = {
                s: {m: float(np.mean([r[m] for r in cell_runs[s].values()])) for m in SHOWN} for s in run_map.SCHEDULERS
            }
            entry["means"] = means
            entry["comparisons"] = {m: compare(cell_runs, m) for m in METRICS}
            entry["winner_round_time"] = winner(entry["comparisons"]["mean_round_s"], means)
            ct, cc = entry["comparisons"]["mean_round_s"], entry["comparisons"]["client_compliance_pct"]
            entry["trades"] = [
                n
                for n in OTHERS
                if ct[n]["significant"] and ct[n]["mean_diff"] < 0 and cc[n]["significant"] and cc[n]["mean_diff"] < 0
            ]
            # cvx and lite (the two budget-constrained schedulers) move round time in opposite directions
            sig = {n: math.copysign(1, ct[n]["mean_diff"]) for n in ("cvx", "lite") if ct[n]["significant"]}
            entry["cvx_lite_disagree"] = len(set(sig.values())) > 1
        cells.append(entry)
    return {
        "script": "experiments/regime_map/analyze.py",
        "runs_written_by": "experiments/regime_map/run_map.py",
        "spec": "experiments/regime_map/SPEC.md",
        "calibration": "configs/surrogate/minilm_profile_clock.json",
        "seeds": run_map.SEEDS,
        "rounds_per_run": run_map.ROUNDS,
        "schedulers": list(run_map.SCHEDULERS),
        "comparison": "each of uniform, cvx, lite minus fixed (rank 8), paired by seed; BCa 95 % CI of the mean "
        "difference; two-sided Wilcoxon; Holm over the 3 comparisons of a cell per metric; MDE: paired-t, alpha "
        "0.05, power 0.8",
        "cells": cells,
    }


def positive_control(res: dict) -> dict:
    cell = next(c for c in res["cells"] if c["cell"] == run_map.POSITIVE_CONTROL)
    runs = cell["runs"]
    fixed_fast = [r["tiers"]["gpu_fast"]["accepted"] for r in runs["fixed"].values()]
    return {
        "fixed_gpu_fast_accepted_every_seed": fixed_fast,
        "fixed_accepted_pct": [r["accepted_pct"] for r in runs["fixed"].values()],
        "cvx_accepted_pct": [r["accepted_pct"] for r in runs["cvx"].values()],
        "cvx_gpu_fast_mean_rank": [r["tiers"]["gpu_fast"]["mean_rank"] for r in runs["cvx"].values()],
        "passes": all(a == 0 for a in fixed_fast)
        and all(r["accepted_pct"] == 100.0 for r in runs["cvx"].values())
        and all(r["accepted_pct"] == 70.0 for r in runs["fixed"].values()),
    }


def markdown(res: dict) -> str:
    lines = [
        "# Regime map (time only), written by `experiments/regime_map/analyze.py`",
        "",
        "From the runs of `experiments/regime_map/run_map.py` (spec: SPEC.md). Surrogate backend, calibration "
        "`configs/surrogate/minilm_profile_clock.json`; 10 clients, "
        f"all selected, {res['rounds_per_run']} rounds; seeds {res['seeds'][0]}-{res['seeds'][-1]} paired. "
        "Differences are scheduler - fixed (rank 8): mean over seeds [BCa 95 % CI]; * = Holm-adjusted Wilcoxon "
        "p < 0.05 within the cell. Round time in simulated seconds; compliance = client-rounds on time (%); "
        "accepted = client-rounds aggregated (%). rho = communication/compute ratio at r_bar.",
        "",
        "| cell | rho | deadline s | fixed round s | uniform d round | cvx d round | lite d round "
        "| winner (round time) | cvx d compliance | lite d compliance | accepted % fixed/uniform/cvx/lite |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["cells"]:
        if not c["complete"]:
            lines.append(f"| {c['cell']} | {c['comm_compute_ratio']:.3g} | not run | | | | | | | | |")
            continue
        ct, cc, m = c["comparisons"]["mean_round_s"], c["comparisons"]["client_compliance_pct"], c["means"]
        dl = "-" if c["deadline_s"] is None else f"{c['deadline_s']:.3g}"
        acc = "/".join(f"{m[s]['accepted_pct']:.0f}" for s in run_map.SCHEDULERS)
        flag = " (faster, less compliant: " + ", ".join(c["trades"]) + ")" if c["trades"] else ""
        flag += " (cvx and lite disagree)" if c["cvx_lite_disagree"] else ""
        lines.append(
            f"| {c['cell']} | {c['comm_compute_ratio']:.3g} | {dl} | {m['fixed']['mean_round_s']:.3g} | "
            f"{fmt_diff(ct['uniform'])} | {fmt_diff(ct['cvx'])} | {fmt_diff(ct['lite'])} | "
            f"{c['winner_round_time']}{flag} | {fmt_diff(cc['cvx'])} | {fmt_diff(cc['lite'])} | {acc} |"
        )
    return "\n".join(lines) + "\n"


def figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links, hets = run_map.LINKS, run_map.HETEROGENEITY
    by = {c["cell"]: c for c in res["cells"] if c["complete"]}
    panels = [
        ("cvx", "Dnone_none", "mean_round_s", "cvx round-time saving vs fixed,\nno deadline (%)", True),
        ("lite", "Dnone_none", "mean_round_s", "lite round-time saving vs fixed,\nno deadline (%)", True),
        ("cvx", "D0.7_drop", "accepted_pct", "cvx accepted-updates gain vs fixed,\n0.7 x T8, drop (points)", False),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax, (sched, suffix, metric, title, relative) in zip(axes, panels):
        grid = np.full((len(hets), len(links)), np.nan)
        for j, link in enumerate(links):
            for i, het in enumerate(hets):
                c = by.get(f"L{link:g}_{het}_{suffix}")
                if c is None:
                    continue
                f, x = c["means"]["fixed"][metric], c["means"][sched][metric]
                grid[i, j] = 100 * (f - x) / f if relative else x - f
        im = ax.imshow(grid, cmap="RdBu", vmin=-np.nanmax(np.abs(grid)), vmax=np.nanmax(np.abs(grid)), aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(links)), [f"{x:g}" for x in links])
        ax.set_yticks(range(len(hets)), hets)
        ax.set_xlabel("link speed L (Mbit/s)")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.suptitle("Regime map (surrogate, 10 seeds; experiments/regime_map/analyze.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="folder for regime_map.json, .md and .png")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    res = analyse()
    if any(c["cell"] == run_map.POSITIVE_CONTROL and c["complete"] for c in res["cells"]):
        res["positive_control"] = positive_control(res)
    (out / "regime_map.json").write_text(json.dumps(res, separators=(",", ":")) + "\n")
    (out / "regime_map.md").write_text(markdown(res))
    figure(res, out / "regime_map.png")
    done = sum(c["complete"] for c in res["cells"])
    print(
        f"{done}/{len(res['cells'])} cells complete; positive control: {res.get('positive_control', {}).get('passes')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
