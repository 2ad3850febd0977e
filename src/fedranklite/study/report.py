"""`fedranklite report SWEEP_DIR`: what a sweep (sweep.py) found, with its uncertainty over seeds.

Per cell (scheduler x axis values): the number of finished seeds and, for each headline metric, the mean
over seeds with a 95 % percentile-bootstrap CI (stats.py). Runs that never reach the target are counted,
not dropped: "reached k/N", the time-to-target mean over the reached runs only (labelled so), and the
median with unreached runs as +inf ("not reached" when that median is infinite).

Paired differences against the reference cell with the same axis values: the same seed gives both runs
the same data split, client selection and client speeds, so d_s = x_cell(s) - x_ref(s) over the seeds
both finished, with a paired bootstrap CI (seeds resampled), wins/losses/ties and a sign test of W vs L.
A CI is starred only over at least stats.MIN_STAR_PAIRS pairs. For time- and rounds-to-target the mean
difference uses the seeds where both reached (labelled so) and is never starred when a pair is censored
(unreached in either arm); wins/losses/ties count an unreached run as +inf. A cell whose runs differ
from the reference's in metric or direction gets no paired differences, in target or num_rounds no
paired time/rounds to target; each such case, and every run that cannot be read, is a warning.

Writes report.md, report.json (every number), ttt.png and curves.png into --out (default SWEEP_DIR/report).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional

from fedranklite.core.results_io import write_json_atomic, write_text_atomic
from fedranklite.study.report_figures import plot_curves, plot_ttt
from fedranklite.study.report_markdown import markdown
from fedranklite.study.stats import (
    ALPHA,
    MIN_STAR_PAIRS,
    POWER,
    censored_median,
    censored_pairs,
    holm,
    mean_ci,
    minimum_detectable_effect,
    paired_ci,
    paired_differences,
    sign_test,
    star,
    wilcoxon_p,
    wins_losses_ties,
)
from fedranklite.study.sweep_results import (
    HORIZON,
    PRIMARY,
    Finished,
    Metric,
    ReportError,
    load_sweep,
    metrics_of,
    restricted,
    score_auc,
    sustained_time_to_target,
)


def _groups(entries: list[dict]) -> list[dict]:
    """The report's cells in sweep order: {group, cell, axes}."""
    out: dict[str, dict] = {}
    for run in entries:
        out.setdefault(run["group"], {"group": run["group"], "cell": run["cell"], "axes": run["axes"]})
    return list(out.values())


def _reference_group(group: dict, groups: list[dict], reference: str) -> Optional[str]:
    for g in groups:
        if g["cell"] == reference and g["axes"] == group["axes"]:
            return g["group"]
    return None


# what a paired difference assumes both runs share: (key, its name, what a mismatch rules out)
SAME = (
    ("metric", "metric", "all"),
    ("higher_is_better", "direction", "all"),
    ("target", "target", "ttt"),
    ("num_rounds", "num_rounds", "ttt"),
)


def _setting(run: Finished, key: str) -> Any:
    return run.entry.get("num_rounds") if key == "num_rounds" else getattr(run.summary, key)


def _mismatch(mine: dict[int, Finished], theirs: dict[int, Finished]) -> dict[str, list]:
    """Settings in which the runs of a cell and of its reference differ (seeds in both):
    name -> [seeds, cell's values, reference's values]."""
    out: dict[str, list] = {}
    for s in sorted(set(mine) & set(theirs)):
        for key, name, _ in SAME:
            a, b = _setting(mine[s], key), _setting(theirs[s], key)
            if a != b:
                seeds, va, vb = out.setdefault(name, [[], [], []])
                seeds.append(s)
                for value, values in ((a, va), (b, vb)):
                    if value not in values:
                        values.append(value)
    return out


def _order_unknown(m: Metric, mine: dict[int, Finished], theirs: dict[int, Finished]) -> int:
    """Seeds where one run reached the target at t and the other did not but stopped before t (in simulated
    seconds or rounds): which is sooner is unknown, though W/L counts the unreached run as slower."""
    horizon, count = HORIZON.get(m.key), 0
    if horizon is None:
        return 0
    for s in set(mine) & set(theirs):
        a, b = mine[s].values, theirs[s].values
        for x, y in ((a, b), (b, a)):
            t, stop = x.get(m.key), y.get(horizon)
            if t is not None and y.get(m.key) is None and stop is not None and stop < t:
                count += 1
    return count


def build(
    sweep_dir: Path, reference: Optional[str] = None, resamples: int = 10000, seed: int = 0
) -> tuple[dict, list[Finished]]:
    """Every number of the report, as JSON-ready data, and the finished runs (for the figures)."""
    sw = load_sweep(sweep_dir)
    plan, finished, entries = sw.plan, sw.finished, sw.entries
    cells = list(plan.get("schedulers") or {})
    reference = reference or plan.get("reference") or (cells[0] if cells else None)
    if reference not in cells:
        raise ReportError(f"--reference {reference!r}: not a cell of this sweep ({', '.join(map(str, cells))})")
    groups = _groups(entries)
    warnings_: list[str] = [f"{u['run']}: unreadable, counted as missing: {u['error']}" for u in sw.unreadable]
    # the report's metric, direction and target: the reference's first finished run's (else the first's)
    first_run = next((f for f in finished if f.entry["cell"] == reference), finished[0] if finished else None)
    first = first_run.summary if first_run else None
    metric = first.metric if first else "score"
    higher = first.higher_is_better if first else True
    for key, name, _ in SAME[:3]:
        seen: dict[str, list[str]] = {}
        for f in finished:
            seen.setdefault(repr(_setting(f, key)), []).append(f.entry["folder"])
        if len(seen) > 1:
            shown = "; ".join(f"{v} ({', '.join(fs[:3])}{' ...' if len(fs) > 3 else ''})" for v, fs in seen.items())
            warnings_.append(f"finished runs differ in {name}: {shown}")
    fair_keys = list((first.fairness_final or {}) if first else [])
    metrics = metrics_of(metric, higher, fair_keys)
    # the common horizon: the simulated time every finished run covers, so the primary metric (score averaged
    # over it) and the restricted time to target compare every run over the same span
    totals = [f.values.get("sim_time_total") for f in finished]
    horizon = min((x for x in totals if x is not None and x > 0), default=None)
    target = first.target if first else None
    for f in finished:
        f.values[PRIMARY] = score_auc(f.records, horizon) if horizon else None
        sustained = sustained_time_to_target(f.records, target, higher)
        f.values["ttt_restricted"] = restricted(sustained, horizon) if horizon and target is not None else None
    runs_of: dict[str, dict[int, Finished]] = {g["group"]: {} for g in groups}
    for run in finished:
        runs_of[run.entry["group"]][run.entry["seed"]] = run
    by_group = {g: {s: f.values for s, f in seeds.items()} for g, seeds in runs_of.items()}
    planned = {g["group"]: sum(r["group"] == g["group"] for r in entries) for g in groups}

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
        differ = _mismatch(runs_of[g["group"]], runs_of[ref])
        skip_all = [n for k, n, what in SAME if what == "all" and n in differ]
        skip_ttt = [n for k, n, what in SAME if n in differ]
        for name, (seeds_, va, vb) in differ.items():
            rule = "no paired differences" if skip_all else "no paired time/rounds to target"
            warnings_.append(
                f"{g['group']} vs {ref}: {name} differs ({', '.join(map(repr, va))} vs {', '.join(map(repr, vb))}, "
                f"seeds {', '.join(map(str, seeds_))}): {rule}"
            )
        for m in metrics:
            a = {s: v.get(m.key) for s, v in mine.items()}
            b = {s: v.get(m.key) for s, v in theirs.items()}
            row = {
                "cell": g["group"],
                "reference": ref,
                "metric": m.key,
                "label": m.label,
                "lower_is_better": m.lower_is_better,
                "seeds_in_both": len(set(mine) & set(theirs)),
            }
            skipped = skip_all or (skip_ttt if m.censored else [])
            if skipped:
                paired.append(
                    {
                        **row,
                        **{"n": 0, "mean": None, "ci": None, "excludes_zero": False, "ci_excludes_zero": False},
                        **{"wins": None, "losses": None, "ties": None, "sign_p": None},
                        "no_star": f"{' and '.join(skipped)} differ(s) from the reference's",
                        "skipped": f"{' and '.join(skipped)} differ(s) from the reference's",
                    }
                )
                continue
            est = paired_ci(a, b, resamples, seed)
            cens = censored_pairs(a, b) if m.censored else 0
            w, lo, t = wins_losses_ties(a, b, m.lower_is_better, missing_is_worst=m.censored)
            both, d = paired_differences(a, b)
            row.update(est.to_json())
            row.update({"ci_excludes_zero": est.excludes_zero, "wins": w, "losses": lo, "ties": t})
            row.update({"sign_p": sign_test(w, lo), "differences": dict(zip(map(str, both), d))})
            # a Wilcoxon test over both-reached pairs of a censored metric would be conditional on reaching
            row["wilcoxon_p"] = None if m.censored else wilcoxon_p(d)
            row["mde"] = None if m.censored else minimum_detectable_effect(d)
            row["_estimate"], row["_censored"] = est, cens
            if m.censored:
                row["censored_pairs"] = cens
                row["order_unknown"] = _order_unknown(m, runs_of[g["group"]], runs_of[ref])
            paired.append(row)
    # Holm over the comparisons of each metric (every non-reference cell against its reference: the
    # comparisons the sweep spec declares), then the star, which needs the corrected p where a test was made
    for key in {p["metric"] for p in paired}:
        family = [p for p in paired if p["metric"] == key and "_estimate" in p]
        for p, adjusted in zip(family, holm([p["wilcoxon_p"] for p in family])):
            p["holm_p"] = adjusted
            starred, why = star(p.pop("_estimate"), p.pop("_censored"), adjusted_p=adjusted)
            p.update({"excludes_zero": starred, "no_star": why})

    report = {
        "sweep_dir": str(sweep_dir),
        "metric": metric,
        "higher_is_better": higher,
        "target": first.target if first else None,
        "reference": reference,
        "level": 0.95,
        "resamples": resamples,
        "seed": seed,
        "min_star_pairs": MIN_STAR_PAIRS,
        "primary_metric": PRIMARY,
        "horizon_sim_seconds": horizon,
        "ci_method": "BCa",
        "tests": {"paired": "Wilcoxon signed-rank, two-sided", "correction": "Holm, per metric", "alpha": ALPHA},
        "mde": {"alpha": ALPHA, "power": POWER, "method": "paired t approximation, observed SD of differences"},
        "per_seed": {g: {str(s): f.values for s, f in sorted(runs.items())} for g, runs in runs_of.items()},
        "budget": {
            "seeds": sorted({r["seed"] for r in entries}),
            "rounds": sorted({r.get("num_rounds") for r in entries if r.get("num_rounds") is not None}),
            "clients": sorted({r.get("clients") for r in entries if isinstance(r.get("clients"), int)}),
            "clients_per_round": sorted(
                {r["clients_per_round"] for r in entries if isinstance(r.get("clients_per_round"), int)}
            ),
        },
        "runs": {"total": len(plan["runs"]), "finished": len(finished), "missing": sw.missing},
        "failed": sw.failed,
        "unreadable": sw.unreadable,
        "warnings": warnings_,
        "metrics": [{"key": m.key, "label": m.label, "lower_is_better": m.lower_is_better} for m in metrics],
        "cells": cell_rows,
        "paired": paired,
    }
    return report, finished


# ---- markdown


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


__all__ = ["build", "main"]
