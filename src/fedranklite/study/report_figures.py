"""The figures of a sweep report: time to target per cell (ttt.png) and score against simulated time with
bootstrap bands (curves.png)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fedranklite.core.records import RoundRecord
from fedranklite.study.sweep_results import Finished


def plot_ttt(report: dict, path: Path) -> Path:
    from fedranklite.study.plots import pyplot, save_figure

    plt = pyplot()
    cells = report["cells"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(cells) + 2), 4.2))
    x = np.arange(len(cells))
    top = 0.0
    for i, c in enumerate(cells):
        e = c["metrics"]["ttt_seconds"]
        if e["mean"] is not None:
            lo, hi = e["ci"] if e["ci"] else (e["mean"], e["mean"])
            ax.errorbar(i, e["mean"], yerr=[[e["mean"] - lo], [hi - e["mean"]]], fmt="o", capsize=6, color="C0")
            top = max(top, hi)
        if c["ttt_median_reached"]:
            ax.plot(i, c["ttt_median_censored"], marker="x", color="C3", linestyle="none")
            top = max(top, c["ttt_median_censored"])
    for i, c in enumerate(cells):
        e = c["metrics"]["ttt_seconds"]
        y = (e["ci"][1] if e["ci"] else e["mean"]) if e["mean"] is not None else 0.0
        ax.annotate(f"reached {c['reached']}/{c['n']}", (i, y), textcoords="offset points", xytext=(0, 8), ha="center")
    ax.plot([], [], "o", color="C0", label="mean over reached runs, 95 % bootstrap CI")
    ax.plot([], [], "x", color="C3", label="median, unreached = ∞ (absent: not reached)")
    ax.set_xticks(x, [c["group"] for c in cells], rotation=20 if len(cells) > 4 else 0, ha="right")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylim(0, top * 1.45 if top > 0 else 1)
    ax.set_ylabel("time to target (simulated s)")
    ax.set_title(f"time to target {report['target']} ({report['metric']})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path, plt)


def score_steps(records: list[RoundRecord], grid: np.ndarray) -> np.ndarray:
    """A run's evaluated score as a step function of simulated time, sampled on `grid`: NaN before the
    first evaluation, then the latest evaluation's score (held after the run ends)."""
    points = sorted((r.sim_time, r.score) for r in records if r.score is not None)
    if not points:
        return np.full(grid.shape, np.nan)
    times = np.array([p[0] for p in points])
    scores = np.array([p[1] for p in points], dtype=np.float64)
    idx = np.searchsorted(times, grid, side="right") - 1
    return np.where(idx >= 0, scores[np.clip(idx, 0, None)], np.nan)


def plot_curves(report: dict, finished: list[Finished], path: Path, resamples: int, seed: int) -> Path:
    from fedranklite.study.plots import pyplot, save_figure

    plt = pyplot()
    end = max((r.sim_time for f in finished for r in f.records), default=1.0) or 1.0
    grid = np.linspace(0.0, end, 300)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    draws = min(resamples, 1000)
    for i, c in enumerate(report["cells"]):
        runs = [f for f in finished if f.entry["group"] == c["group"]]
        if not runs:
            continue
        m = np.stack([score_steps(f.records, grid) for f in runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # grid points before any run's first evaluation
            mean = np.nanmean(m, axis=0)
            color = f"C{i % 10}"
            ax.plot(grid, mean, color=color, label=f"{c['group']} (n={len(runs)})")
            if len(runs) > 1:
                idx = np.random.default_rng(seed).integers(0, len(runs), size=(draws, len(runs)))
                boot = np.nanmean(m[idx], axis=1)
                lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
                ax.fill_between(grid, lo, hi, color=color, alpha=0.18, linewidth=0)
    if report["target"] is not None:
        ax.axhline(report["target"], color="red", linestyle="--", linewidth=1, label=f"target {report['target']}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(report["metric"])
    ax.set_title(f"mean {report['metric']} over seeds (band: 95 % bootstrap CI of the mean, {draws} resamples)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, plt)
