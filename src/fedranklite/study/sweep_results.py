"""A sweep's finished runs read back for reporting: which runs finished, their headline values per metric
(time and rounds to target, final and best score, fairness), and the errors of runs that could not be read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fedranklite.core.records import RoundRecord, RunSummary
from fedranklite.core.results_io import ResultsError, read_run
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


PRIMARY = "auc"  # the primary metric of a comparison: the score averaged over the common simulated horizon


def metrics_of(metric: str, higher_is_better: bool, fairness_keys: list[str]) -> list[Metric]:
    lower = not higher_is_better
    return [
        Metric(PRIMARY, f"mean {metric} over the common horizon (AUC / horizon)", 4, lower),
        Metric("ttt_restricted", "restricted time to target, 2 evals in a row (sim s, unreached = horizon)", 1, True),
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


def score_auc(records: list[RoundRecord], horizon: float) -> Optional[float]:
    """The evaluated score as a step function of simulated time (each evaluation holds until the next; before
    the first, the first), averaged over [0, horizon]: the area under the score-vs-time curve divided by the
    horizon, so it is on the score's scale and rewards reaching a good score early. None without evaluations
    or with a horizon that is not positive."""
    points = sorted((r.sim_time, r.score) for r in records if r.score is not None and math.isfinite(r.score))
    if not points or not horizon > 0:
        return None
    area, t0, s0 = 0.0, 0.0, points[0][1]
    for t, s in points:
        if t >= horizon:
            break
        area += s0 * (max(t, 0.0) - t0)
        t0, s0 = max(t, 0.0), s
    area += s0 * (horizon - t0)
    return area / horizon


def sustained_time_to_target(
    records: list[RoundRecord], target: Optional[float], higher_is_better: bool, in_a_row: int = 2
) -> Optional[float]:
    """Simulated time of the first of `in_a_row` consecutive evaluations that all meet the target (one lucky
    evaluation of a noisy score does not count); None when never met or with no target."""
    if target is None:
        return None
    evals = sorted((r.sim_time, r.score) for r in records if r.score is not None)
    met = [(s >= target) if higher_is_better else (s <= target) for _, s in evals]
    for i in range(len(evals) - in_a_row + 1):
        if all(met[i : i + in_a_row]):
            return float(evals[i][0])
    return None


def restricted(time: Optional[float], horizon: float) -> float:
    """A time to target restricted to the horizon: min(time, horizon), an unreached run counting as the horizon
    (the restricted-mean handling of censoring: every run has a value, and a mean over runs is the expected
    time lost before the target within the horizon)."""
    return horizon if time is None else min(time, horizon)


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
