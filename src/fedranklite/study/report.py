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

import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedranklite.core.records import RoundRecord, RunSummary
from fedranklite.core.results_io import ResultsError, read_run, write_json_atomic, write_text_atomic
from fedranklite.study.stats import (
    MIN_STAR_PAIRS,
    Estimate,
    censored_median,
    censored_pairs,
    mean_ci,
    paired_ci,
    sign_test,
    star,
    wins_losses_ties,
)
from fedranklite.study.sweep import ERROR_FILE, SWEEP_FILE, run_finished


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


def _number(key: str, x: Any) -> Optional[float]:
    """A summary value as a float (None stays None); anything else is a ValueError naming the key."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{key}: {x!r} is not a number")
    return float(x)


def run_values(s: RunSummary) -> dict[str, Optional[float]]:
    """A run's headline numbers; a value of the wrong type raises ValueError (one line)."""
    ttt = s.time_to_target
    for key, kind in (("bytes", dict), ("fairness_final", dict), ("metric", str)):
        value = getattr(s, key)
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{key}: {value!r} is not a {kind.__name__}")
    if not isinstance(s.higher_is_better, bool):
        raise ValueError(f"higher_is_better: {s.higher_is_better!r} is not true/false")
    _number("target", s.target)
    reached = ttt.round is not None
    rounds = _number("rounds_completed", s.rounds_completed)
    total = _number("sim_time_total", s.sim_time_total)
    up = _number("bytes.up_per_client_per_round", (s.bytes or {}).get("up_per_client_per_round"))
    values = {
        "final_score": _number("final_score", s.final_score),
        "best_score": _number("best_score", s.best_score),
        "ttt_seconds": _number("time_to_target.sim_seconds", ttt.sim_seconds) if reached else None,
        "ttt_rounds": _number("time_to_target.round", ttt.round) if reached else None,
        "sec_per_round": total / rounds if rounds and total is not None else None,
        "compliance_pct": _number("deadline_compliance_pct", s.deadline_compliance_pct),
        "kb_up": None if up is None else up / 1024,
    }
    values.update({f"loss_{k}": _number(f"fairness_final.{k}", v) for k, v in (s.fairness_final or {}).items()})
    return values


# how far an unreached run looked: its simulated seconds / rounds in all (an unreached run is only known
# to be slower than a reached one if it ran past the other's time)
HORIZON = {"ttt_seconds": "sim_time_total", "ttt_rounds": "rounds_completed"}


class ReportError(ValueError):
    """A sweep folder that cannot be reported on (one line)."""


@dataclass
class Sweep:
    plan: dict  # sweep.json
    entries: list[dict]  # its runs that name a folder, group, cell, seed and axes
    finished: list[Finished]
    missing: list[str]  # folders of runs not finished (or not readable)
    failed: list[str]  # folders with sweep_error.log
    unreadable: list[dict]  # {"run", "error"}: a sweep.json entry or a run's results that cannot be read


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"not a mapping: {entry!r}"[:200])
    for key, kind in (("folder", str), ("group", str), ("cell", str), ("seed", int), ("axes", dict)):
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise ValueError(f"{key}: {entry.get(key)!r} is not a {kind.__name__}"[:200])
    parts = Path(entry["folder"]).parts
    if not parts or Path(entry["folder"]).is_absolute() or ".." in parts:
        raise ValueError(f"folder: {entry['folder']!r} is not a folder inside the sweep")
    for key in ("num_rounds",):
        if not isinstance(entry.get(key, 0), int) or isinstance(entry.get(key), bool):
            raise ValueError(f"{key}: {entry.get(key)!r} is not an int")


def load_sweep(sweep_dir: Path) -> Sweep:
    """sweep.json, the finished runs, the folders of runs not finished and of runs that failed, and the runs
    that cannot be read (each named, with a one-line reason)."""
    try:
        plan = json.loads((sweep_dir / SWEEP_FILE).read_text())
        runs = plan["runs"]
        if not isinstance(runs, list):
            raise TypeError(f"runs: a {type(runs).__name__}, not a list")
        if not isinstance(plan.get("schedulers") or {}, (dict, list)):
            raise TypeError(f"schedulers: a {type(plan['schedulers']).__name__}, not a mapping")
    except FileNotFoundError:
        raise ReportError(f"{sweep_dir / SWEEP_FILE}: not found (is {sweep_dir} the output_dir of a sweep?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{sweep_dir / SWEEP_FILE}: cannot be read ({type(exc).__name__}: {exc})") from None
    out = Sweep(plan, [], [], [], [], [])
    for i, entry in enumerate(runs):
        name = entry["folder"] if isinstance(entry, dict) and isinstance(entry.get("folder"), str) else f"runs[{i}]"
        try:
            _check_entry(entry)
        except ValueError as exc:
            out.unreadable.append({"run": name, "error": f"{SWEEP_FILE} entry: {exc}"})
            out.missing.append(name)
            continue
        out.entries.append(entry)
        folder = sweep_dir / entry["folder"]
        if not run_finished(folder, entry.get("num_rounds", 0), bool(entry.get("stop_at_target", False))):
            out.missing.append(entry["folder"])
            if (folder / ERROR_FILE).exists():
                out.failed.append(entry["folder"])
            continue
        try:
            summary, records = read_run(folder)
            values = run_values(summary)
            values.update({h: _number(h, getattr(summary, h)) for h in HORIZON.values()})
        except ResultsError as exc:
            out.unreadable.append({"run": name, "error": str(exc)})
            out.missing.append(name)
            continue
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            error = f"{folder / 'metrics.json'}: cannot be read ({type(exc).__name__}: {exc})"
            out.unreadable.append({"run": name, "error": error})
            out.missing.append(name)
            continue
        out.finished.append(Finished(entry, summary, records, values))
    return out


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
            starred, why = star(est, cens)
            w, lo, t = wins_losses_ties(a, b, m.lower_is_better, missing_is_worst=m.censored)
            row.update(est.to_json())
            row.update({"excludes_zero": starred, "ci_excludes_zero": est.excludes_zero, "no_star": why})
            row.update({"wins": w, "losses": lo, "ties": t, "sign_p": sign_test(w, lo)})
            if m.censored:
                row["censored_pairs"] = cens
                row["order_unknown"] = _order_unknown(m, runs_of[g["group"]], runs_of[ref])
            paired.append(row)

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


def _num(x: Optional[float], digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _est(e: dict, digits: int, of: Optional[int] = None) -> str:
    """mean [lo, hi], with (n=k) when the CI has fewer values than `of` (the cell's finished runs: values
    that are missing or not finite are left out) or there is no CI."""
    if e["mean"] is None:
        return "–"
    n = f" (n={e['n']})" if e["ci"] is None or (of is not None and e["n"] < of) else ""
    if e["ci"] is None:
        return f"{_num(e['mean'], digits)}{n}"
    return f"{_num(e['mean'], digits)} [{_num(e['ci'][0], digits)}, {_num(e['ci'][1], digits)}]{n}"


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
    if report.get("warnings"):
        out += ["**Warnings:**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    metric = report["metric"]
    rows = []
    for c in report["cells"]:
        m = c["metrics"]
        median = "–" if not c["n"] else _num(c["ttt_median_censored"], 1) if c["ttt_median_reached"] else "not reached"
        rows.append(
            [
                c["group"],
                f"{c['n']}" + ("" if c["n"] == c["planned"] else f" of {c['planned']}"),
                _est(m["final_score"], 4, c["n"]),
                _est(m["best_score"], 4, c["n"]),
                f"{c['reached']}/{c['n']}",
                _est(m["ttt_seconds"], 1, c["n"]),
                median,
                _est(m["ttt_rounds"], 1, c["n"]),
                _est(m["sec_per_round"], 2, c["n"]),
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
        [c["group"], str(c["n"]), _est(c["metrics"]["compliance_pct"], 1, c["n"])]
        + [_est(c["metrics"][k], 4, c["n"]) for k in fair]
        + [_est(c["metrics"]["kb_up"], 1, c["n"])]
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
            censored = p["metric"] in ("ttt_seconds", "ttt_rounds")
            label = p["label"] + (" (both reached)" if censored else "")
            note = p.get("skipped") or ""
            if not note and censored and p.get("censored_pairs"):
                note = f"{p['censored_pairs']} censored pair(s): no star"
                if p.get("order_unknown"):
                    note += f"; {p['order_unknown']} of unknown order"
            elif not note and p["ci"] is not None and p.get("ci_excludes_zero") and not p["excludes_zero"]:
                note = f"CI excludes 0, no star: {p.get('no_star')}"
            seeds_ = str(p["n"]) + ("" if p["n"] == p.get("seeds_in_both", p["n"]) else f" of {p['seeds_in_both']}")
            rows.append(
                [
                    p["cell"],
                    p["reference"],
                    label,
                    "lower" if p["lower_is_better"] else "higher",
                    seeds_,
                    "–" if p["mean"] is None else f"{p['mean']:+.{d}f}",
                    ci + (" *" if p["excludes_zero"] else ""),
                    "–" if p["wins"] is None else f"{p['wins']}/{p['losses']}/{p['ties']}",
                    "–" if p.get("sign_p") is None else f"{p['sign_p']:.3f}",
                    note,
                ]
            )
        min_pairs = report.get("min_star_pairs", MIN_STAR_PAIRS)
        out += [
            "## Paired differences against the reference (same seed: same data split, selection, client speeds)",
            "",
            "d = cell − reference per seed; mean over seeds in both with a paired bootstrap 95 % CI. "
            f"* : the CI excludes 0, over at least {min_pairs} pairs, and (time and rounds to target) no pair "
            "is censored. W/L/T: seeds where the cell is better / worse / equal; sign p: two-sided exact "
            "binomial test of W against L, ties dropped. For time and rounds to target an unreached run counts "
            "as +∞ in W/L/T (sooner wins; two unreached runs tie), while the mean difference uses only seeds "
            "where both reached: with any censored pair (a seed unreached in either arm) that mean is "
            "conditional on reaching and gets no star; read W/L/T and sign p instead. A pair of unknown order: "
            "the unreached run stopped (in simulated time) before the other reached, yet counts as slower.",
            "",
            "Percentile bootstrap CIs over few seeds under-cover: over 10 seeds of normal data a nominal 95 % "
            "CI covers the mean about 91 % of the time (simulation), so a star near the edge is weak evidence.",
            "",
            _table(
                ["cell", "reference", "metric", "better", "seeds", "mean d", "95 % CI", "W/L/T", "sign p", "note"],
                rows,
            ),
            "",
        ]
    return "\n".join(out)


# ---- figures


def plot_ttt(report: dict, path: Path) -> Path:
    from fedranklite.study.plots import _pyplot, _save

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
    from fedranklite.study.plots import _pyplot, _save

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
