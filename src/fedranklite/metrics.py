"""Scores, per-round records and the run summary: pure functions over plain data.

A round record is a dict (one line of rounds.jsonl); the run summary (metrics.json) is computed from
the list of round records alone, so it can be recomputed from rounds.jsonl at any time.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .registry import Registry


# ---------------------------------------------------------------- evaluation scores
@dataclass(frozen=True)
class ScoreMetric:
    name: str
    task: str  # "classification", "regression" or "any"
    fn: Callable[[np.ndarray, np.ndarray], float]  # (predictions, labels) -> score
    higher_is_better: bool = True


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(label))) if len(label) else float("nan")


def f1_binary(pred: np.ndarray, label: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC/QQP."""
    pred, label = np.asarray(pred), np.asarray(label)
    tp = float(np.sum((pred == 1) & (label == 1)))
    fp = float(np.sum((pred == 1) & (label != 1)))
    fn = float(np.sum((pred != 1) & (label == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_macro(pred: np.ndarray, label: np.ndarray) -> float:
    pred, label = np.asarray(pred), np.asarray(label)
    classes = np.union1d(pred, label)
    return float(np.mean([f1_binary((pred == c).astype(int), (label == c).astype(int)) for c in classes]))


def pearson(pred: np.ndarray, label: np.ndarray) -> float:
    pred, label = np.asarray(pred, dtype=np.float64), np.asarray(label, dtype=np.float64)
    if pred.size < 2 or pred.std() == 0 or label.std() == 0:
        return 0.0
    return float(np.corrcoef(pred, label)[0, 1])


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(pred: np.ndarray, label: np.ndarray) -> float:
    return pearson(average_ranks(pred), average_ranks(label))


def mse(pred: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, dtype=np.float64) - np.asarray(label, dtype=np.float64)) ** 2))


SCORE_METRICS: Registry[ScoreMetric] = Registry("evaluation metric")
for _m in (ScoreMetric("accuracy", "classification", accuracy), ScoreMetric("f1", "classification", f1_binary),
           ScoreMetric("f1_macro", "classification", f1_macro), ScoreMetric("pearson", "regression", pearson),
           ScoreMetric("spearman", "regression", spearman), ScoreMetric("mse", "regression", mse, False)):
    SCORE_METRICS.register(_m.name)(_m)


def default_metric(task: str) -> str:
    return "pearson" if task == "regression" else "accuracy"


# ---------------------------------------------------------------- per-round quantities
def fairness(losses: Sequence[float], percentiles: Sequence[float]) -> dict[str, Optional[float]]:
    """Percentiles of the per-client losses (linear interpolation), keyed p10, p50, ..."""
    values = np.asarray([v for v in losses if v is not None and math.isfinite(v)], dtype=np.float64)
    out = {}
    for p in percentiles:
        key = f"p{p:g}"
        out[key] = float(np.percentile(values, p)) if values.size else None
    return out


def reached(score: Optional[float], target: Optional[float], higher_is_better: bool) -> bool:
    if score is None or target is None or not math.isfinite(score):
        return False
    return score >= target if higher_is_better else score <= target


def time_to_target(records: Sequence[dict], target: Optional[float], higher_is_better: bool = True) -> dict:
    """First round (and its cumulative simulated seconds) whose evaluation score reached the target."""
    for rec in records:
        if reached(rec.get("score"), target, higher_is_better):
            return {"round": rec["round"], "sim_seconds": rec["sim_time"]}
    return {"round": None, "sim_seconds": None}


def summarize(records: Sequence[dict], *, target: Optional[float], metric: str, higher_is_better: bool = True,
              percentiles: Sequence[float] = (10, 50, 90), extra: Optional[dict] = None) -> dict[str, Any]:
    """The run summary written to metrics.json, computed from the round records alone."""
    evaluated = [r for r in records if r.get("score") is not None]
    per_client_up: dict[str, list[int]] = {}
    per_client_down: dict[str, list[int]] = {}
    peak_memory: dict[str, float] = {}
    for rec in records:
        for c in rec["clients"]:
            cid = str(c["cid"])
            per_client_up.setdefault(cid, []).append(c["bytes_up"])
            per_client_down.setdefault(cid, []).append(c["bytes_down"])
            if c.get("peak_memory_mb") is not None:
                peak_memory[cid] = max(peak_memory.get(cid, 0.0), c["peak_memory_mb"])
    participations = [c for rec in records for c in rec["clients"]]
    up_total = int(sum(c["bytes_up"] for c in participations))
    down_total = int(sum(c["bytes_down"] for c in participations))
    n_part = max(len(participations), 1)
    compliant = [bool(r["compliant"]) for r in records]
    best = None
    if evaluated:
        scores = [r["score"] for r in evaluated]
        best = max(scores) if higher_is_better else min(scores)
    summary = {
        "rounds_completed": len(records),
        "metric": metric,
        "higher_is_better": higher_is_better,
        "target": target,
        "final_score": evaluated[-1]["score"] if evaluated else None,
        "best_score": best,
        "time_to_target": time_to_target(records, target, higher_is_better),
        "sim_time_total": records[-1]["sim_time"] if records else 0.0,
        "wall_time_total": float(sum(r.get("wall_seconds", 0.0) for r in records)),
        "deadline_compliance_pct": 100.0 * sum(compliant) / len(compliant) if compliant else None,
        "stragglers_total": int(sum(len(r["stragglers"]) for r in records)),
        "fairness_final": records[-1]["fairness"] if records else None,
        "fairness_mean": _mean_dicts([r["fairness"] for r in records]),
        "bytes": {
            "up_total": up_total,
            "down_total": down_total,
            "up_per_client_per_round": up_total / n_part,
            "down_per_client_per_round": down_total / n_part,
            "per_client": {cid: {"up": sum(per_client_up[cid]), "down": sum(per_client_down[cid]),
                                 "rounds": len(per_client_up[cid])} for cid in sorted(per_client_up, key=int)},
        },
        "peak_memory_mb": dict(sorted(peak_memory.items(), key=lambda kv: int(kv[0]))),
        "rounds": [{
            "round": r["round"], "score": r.get("score"), "sim_time": r["sim_time"],
            "round_sim_seconds": r["round_sim_seconds"], "compliant": r["compliant"],
            "stragglers": r["stragglers"], "ranks": r["ranks"], "fairness": r["fairness"],
            "bytes_up": {str(c["cid"]): c["bytes_up"] for c in r["clients"]},
            "bytes_down": {str(c["cid"]): c["bytes_down"] for c in r["clients"]},
        } for r in records],
    }
    if extra:
        summary = {**extra, **summary}
    return summary


def _mean_dicts(dicts: Iterable[dict]) -> dict:
    acc: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if v is not None:
                acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


# ---------------------------------------------------------------- writing results safely
def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RoundLog:
    """rounds.jsonl: one JSON line per finished round, flushed and fsynced as the run goes."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a" if append else "w")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, default=_json_default) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """Every complete line (a torn last line from a crash is ignored)."""
        out = []
        p = Path(path)
        if not p.exists():
            return out
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out
