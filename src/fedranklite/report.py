"""`fedranklite report SWEEP_DIR`: what a sweep (sweep.py) found, with its uncertainty over seeds.

Per cell (scheduler x axis values): the number of finished seeds and, for each headline metric, the mean
over seeds with a 95 % percentile-bootstrap CI (stats.py). Runs that never reach the target are counted,
not dropped: "reached k/N", the time-to-target mean over the reached runs only (labelled so), and the
median with unreached runs as +inf ("not reached" when that median is infinite).

Paired differences against the reference cell with the same axis values: the same seed gives both runs
the same data split, client selection and client speeds, so d_s = x_cell(s) - x_ref(s) over the seeds
both finished, with a paired bootstrap CI (seeds resampled), and wins/losses/ties. For time-to-target the
mean difference uses the seeds where both reached; wins/losses/ties count an unreached run as +inf.

Writes report.md, report.json (every number), ttt.png and curves.png into --out (default SWEEP_DIR/report).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .records import RoundRecord, RunSummary
from .results_io import ResultsError, read_run, write_json_atomic, write_text_atomic
from .stats import Estimate, censored_median, mean_ci, paired_ci, wins_losses_ties
from .sweep import SWEEP_FILE, run_finished


@dataclass
class Metric:
    key: str
    label: str
    digits: int
    lower_is_better: bool
    censored: bool = False  # a missing value means "target never reached" (worst), not "unknown"


@dataclass
class Finished:
    entry: dict  # the run in sweep.json
    summary: RunSummary
    records: list[RoundRecord]
    values: dict[str, Optional[float]]


def metrics_of(metric: str, higher_is_better: bool, fairness_keys: list[str]) -> list[Metric]:
    lower = not higher_is_better
    return [
        Metric("final_score", f"final {metric}", 4, lower),
        Metric("best_score", f"best {metric}", 4, lower),
        Metric("ttt_seconds", "time to target (sim s)", 1, True, censored=True),
        Metric("ttt_rounds", "rounds to target", 1, True, censored=True),
        Metric("sec_per_round", "sim s per round", 2, True),
        Metric("compliance_pct", "deadline compliance %", 1, False),
        *(Metric(f"loss_{k}", f"client loss {k} (final)", 4, True) for k in fairness_keys),
        Metric("kb_up", "KB up per client-round", 1, True),
    ]


def run_values(s: RunSummary) -> dict[str, Optional[float]]:
    ttt = s.time_to_target
    up = (s.bytes or {}).get("up_per_client_per_round")
    values = {
        "final_score": s.final_score,
        "best_score": s.best_score,
        "ttt_seconds": ttt.sim_seconds if ttt.round is not None else None,
        "ttt_rounds": float(ttt.round) if ttt.round is not None else None,
        "sec_per_round": s.sim_time_total / s.rounds_completed if s.rounds_completed else None,
        "compliance_pct": s.deadline_compliance_pct,
        "kb_up": None if up is None else up / 1024,
    }
    values.update({f"loss_{k}": v for k, v in (s.fairness_final or {}).items()})
    return values


class ReportError(ValueError):
    """A sweep folder that cannot be reported on (one line)."""


def load_sweep(sweep_dir: Path) -> tuple[dict, list[Finished], list[str], list[str]]:
    """sweep.json, the finished runs, the folders of runs not finished and of runs that failed."""
    try:
        plan = json.loads((sweep_dir / SWEEP_FILE).read_text())
        runs = plan["runs"]
    except FileNotFoundError:
        raise ReportError(f"{sweep_dir / SWEEP_FILE}: not found (is {sweep_dir} the output_dir of a sweep?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{sweep_dir / SWEEP_FILE}: cannot be read ({type(exc).__name__}: {exc})") from None
    finished, missing, failed = [], [], []
    for entry in runs:
        folder = sweep_dir / entry["folder"]
        if not run_finished(folder, entry.get("num_rounds", 0), entry.get("stop_at_target", False)):
            missing.append(entry["folder"])
            if (folder / "sweep_error.log").exists():
                failed.append(entry["folder"])
            continue
        try:
            summary, records = read_run(folder)
        except ResultsError:
            missing.append(entry["folder"])
            continue
        finished.append(Finished(entry, summary, records, run_values(summary)))
    return plan, finished, missing, failed


def _groups(plan: dict) -> list[dict]:
    """The report's cells in sweep order: {group, cell, axes}."""
    out: dict[str, dict] = {}
    for run in plan["runs"]:
        out.setdefault(run["group"], {"group": run["group"], "cell": run["cell"], "axes": run["axes"]})
    return list(out.values())


def _reference_group(group: dict, groups: list[dict], reference: str) -> Optional[str]:
    for g in groups:
        if g["cell"] == reference and g["axes"] == group["axes"]:
            return g["group"]
    return None


def build(
    sweep_dir: Path, reference: Optional[str] = None, resamples: int = 10000, seed: int = 0
) -> tuple[dict, list[Finished]]:
    """Every number of the report, as JSON-ready data, and the finished runs (for the figures)."""
    plan, finished, missing, failed = load_sweep(sweep_dir)
    cells = list(plan.get("schedulers") or {})
    reference = reference or plan.get("reference") or (cells[0] if cells else None)
    if reference not in cells:
        raise ReportError(f"--reference {reference!r}: not a cell of this sweep ({', '.join(cells)})")
    groups = _groups(plan)
    first = finished[0].summary if finished else None
    metric = first.metric if first else "score"
    higher = first.higher_is_better if first else True
    fair_keys = list((first.fairness_final or {}) if first else [])
    metrics = metrics_of(metric, higher, fair_keys)
    by_group: dict[str, dict[int, dict]] = {g["group"]: {} for g in groups}
    for run in finished:
        by_group[run.entry["group"]][run.entry["seed"]] = run.values
    planned = {g["group"]: sum(r["group"] == g["group"] for r in plan["runs"]) for g in groups}

    cell_rows = []
    for g in groups:
        seeds = by_group[g["group"]]
        row: dict[str, Any] = {**g, "n": len(seeds), "planned": planned[g["group"]], "seeds": sorted(seeds)}
        row["metrics"] = {
            m.key: mean_ci([v.get(m.key) for v in seeds.values()], resamples, seed).to_json() for m in metrics
        }
        times = [v.get("ttt_seconds") for v in seeds.values()]
        median = censored_median(times)
        row["reached"] = sum(t is not None for t in times)
        row["ttt_median_censored"] = median if median is not None and math.isfinite(median) else None
        row["ttt_median_reached"] = median is not None and math.isfinite(median)
        cell_rows.append(row)

    paired = []
    for g in groups:
        ref = _reference_group(g, groups, reference)
        if g["cell"] == reference or ref is None:
            continue
        mine, theirs = by_group[g["group"]], by_group[ref]
        for m in metrics:
            a = {s: v.get(m.key) for s, v in mine.items()}
            b = {s: v.get(m.key) for s, v in theirs.items()}
            est = paired_ci(a, b, resamples, seed)
            w, lo, t = wins_losses_ties(a, b, m.lower_is_better, missing_is_worst=m.censored)
            paired.append(
                {
                    "cell": g["group"],
                    "reference": ref,
                    "metric": m.key,
                    "label": m.label,
                    "lower_is_better": m.lower_is_better,
                    **est.to_json(),
                    "excludes_zero": est.excludes_zero,
                    "seeds_in_both": len(set(mine) & set(theirs)),
                    "wins": w,
                    "losses": lo,
                    "ties": t,
                }
            )

    entries = plan["runs"]
    report = {
        "sweep_dir": str(sweep_dir),
        "metric": metric,
        "higher_is_better": higher,
        "target": first.target if first else None,
        "reference": reference,
        "level": 0.95,
        "resamples": resamples,
        "seed": seed,
        "budget": {
            "seeds": sorted({r["seed"] for r in entries}),
            "rounds": sorted({r.get("num_rounds") for r in entries if r.get("num_rounds") is not None}),
            "clients": sorted({r.get("clients") for r in entries if r.get("clients") is not None}),
            "clients_per_round": sorted({r["clients_per_round"] for r in entries if r.get("clients_per_round")}),
        },
        "runs": {"total": len(entries), "finished": len(finished), "missing": missing},
        "failed": failed,
        "metrics": [{"key": m.key, "label": m.label, "lower_is_better": m.lower_is_better} for m in metrics],
        "cells": cell_rows,
        "paired": paired,
    }
    return report, finished


# ---- markdown


def _num(x: Optional[float], digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _est(e: dict, digits: int) -> str:
    if e["mean"] is None:
        return "–"
    if e["ci"] is None:
        return f"{_num(e['mean'], digits)} (n=1)"
    return f"{_num(e['mean'], digits)} [{_num(e['ci'][0], digits)}, {_num(e['ci'][1], digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _span(values: list) -> str:
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]} (varies)"


def markdown(report: dict) -> str:
    metrics = {m["key"]: m for m in report["metrics"]}
    digits = {"final_score": 4, "best_score": 4, "ttt_seconds": 1, "ttt_rounds": 1, "sec_per_round": 2}
    digits.update({"compliance_pct": 1, "kb_up": 1})
    b, runs = report["budget"], report["runs"]
    seeds = b["seeds"]
    direction = "higher" if report["higher_is_better"] else "lower"
    out = [
        f"# Sweep report: {report['sweep_dir']}",
        "",
        f"Budget: {len(seeds)} seeds per cell ({', '.join(map(str, seeds))}), {_span(b['rounds'])} rounds per run, "
        f"{_span(b['clients'])} clients ({_span(b['clients_per_round'])} per round); "
        f"reference cell: **{report['reference']}**. Metric: {report['metric']} ({direction} is better), "
        f"target {report['target']}. Means with 95 % percentile-bootstrap CIs over seeds "
        f"({report['resamples']} resamples, RNG seed {report['seed']}).",
        "",
    ]
    if runs["missing"]:
        failed = f", {len(report['failed'])} of them failed (sweep_error.log)" if report["failed"] else ""
        shown = ", ".join(runs["missing"][:10]) + (" ..." if len(runs["missing"]) > 10 else "")
        out += [
            f"**Incomplete: {runs['finished']} of {runs['total']} runs finished; {len(runs['missing'])} missing"
            f"{failed}:** {shown}",
            "",
        ]
    metric = report["metric"]
    rows = []
    for c in report["cells"]:
        m = c["metrics"]
        median = "–" if not c["n"] else _num(c["ttt_median_censored"], 1) if c["ttt_median_reached"] else "not reached"
        rows.append(
            [
                c["group"],
                f"{c['n']}" + ("" if c["n"] == c["planned"] else f" of {c['planned']}"),
                _est(m["final_score"], 4),
                _est(m["best_score"], 4),
                f"{c['reached']}/{c['n']}",
                _est(m["ttt_seconds"], 1),
                median,
                _est(m["ttt_rounds"], 1),
                _est(m["sec_per_round"], 2),
            ]
        )
    out += [
        "## Per cell: score and time",
        "",
        _table(
            [
                "cell",
                "seeds",
                f"final {metric}",
                f"best {metric}",
                "reached target",
                "time to target, sim s (reached runs only)",
                "median time to target, sim s (unreached = ∞)",
                "rounds to target (reached runs only)",
                "sim s per round",
            ],
            rows,
        ),
        "",
    ]
    fair = [k for k in metrics if k.startswith("loss_")]
    rows = [
        [c["group"], str(c["n"]), _est(c["metrics"]["compliance_pct"], 1)]
        + [_est(c["metrics"][k], 4) for k in fair]
        + [_est(c["metrics"]["kb_up"], 1)]
        for c in report["cells"]
    ]
    out += [
        "## Per cell: deadline, fairness, communication",
        "",
        _table(
            ["cell", "seeds", "deadline compliance %"]
            + [f"client loss {k[5:]} (final)" for k in fair]
            + ["KB up per client-round"],
            rows,
        ),
        "",
    ]
    if report["paired"]:
        rows = []
        for p in report["paired"]:
            d = digits.get(p["metric"], 4)
            ci = "–" if p["ci"] is None else f"[{_num(p['ci'][0], d)}, {_num(p['ci'][1], d)}]"
            label = p["label"] + (" (both reached)" if metrics[p["metric"]]["key"].startswith("ttt_") else "")
            rows.append(
                [
                    p["cell"],
                    p["reference"],
                    label,
                    "lower" if p["lower_is_better"] else "higher",
                    str(p["n"]),
                    "–" if p["mean"] is None else f"{p['mean']:+.{d}f}",
                    ci + (" *" if p["excludes_zero"] else ""),
                    f"{p['wins']}/{p['losses']}/{p['ties']}",
                ]
            )
        out += [
            "## Paired differences against the reference (same seed: same data split, selection, client speeds)",
            "",
            "d = cell − reference per seed; mean over seeds in both with a paired bootstrap 95 % CI (* : excludes 0). "
            "W/L/T: seeds where the cell is better / worse / equal; for time and rounds to target an unreached "
            "run counts as +∞ (sooner wins), while the mean difference uses only seeds where both reached.",
            "",
            _table(["cell", "reference", "metric", "better", "seeds", "mean d", "95 % CI", "W/L/T"], rows),
            "",
        ]
    return "\n".join(out)


# ---- figures


def plot_ttt(report: dict, path: Path) -> Path:
    from .plots import _pyplot, _save

    plt = _pyplot()
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
    return _save(fig, path, plt)


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
    from .plots import _pyplot, _save

    plt = _pyplot()
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
    return _save(fig, path, plt)


def main(sweep_dir: str, out: Optional[str], reference: Optional[str], resamples: int, seed: int) -> int:
    folder = Path(sweep_dir)
    try:
        if resamples < 1:
            raise ReportError("--resamples: need at least 1")
        report, finished = build(folder, reference, resamples, seed)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(out) if out else folder / "report"
    text = markdown(report)
    write_text_atomic(out_dir / "report.md", text + "\n")
    write_json_atomic(out_dir / "report.json", report)
    print(text)
    written = [out_dir / "report.md", out_dir / "report.json"]
    if finished:
        written += [plot_ttt(report, out_dir / "ttt.png")]
        written += [plot_curves(report, finished, out_dir / "curves.png", resamples, seed)]
    else:
        print("no finished runs yet: no figures", file=sys.stderr)
    print("\n" + "\n".join(map(str, written)))
    return 0


__all__ = ["Estimate", "ReportError", "build", "main", "markdown", "run_values", "score_steps"]
