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
    finite = [r["score"] for r in evaluated if math.isfinite(r["score"])]  # max() with a NaN is order-dependent
    best = (max(finite) if higher_is_better else min(finite)) if finite else None
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
    """Write to a temporary file in the same folder, then rename: readers never see half a file.
    NaN and infinities are written as null, so the file is strict JSON."""
    write_text_atomic(path, json.dumps(json_ready(data), indent=2, allow_nan=False))  # fails before any write


def rewrite_round_log(path: str | Path, records: Sequence[dict]) -> None:
    """Replace rounds.jsonl atomically with exactly `records` (used when resuming from a checkpoint)."""
    write_text_atomic(path, "".join(json.dumps(json_ready(r), allow_nan=False) + "\n" for r in records))


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_ready(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays as Python values and non-finite floats as None (JSON null)."""
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RoundLog:
    """rounds.jsonl: one JSON line per finished round, flushed and fsynced as the run goes."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists():
            _drop_torn_tail(self.path)  # else the next record would be glued onto a torn line
        self._fh = open(self.path, "a" if append else "w")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(json_ready(record), allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RoundLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """Every complete record, in order (a torn last line from a crash is ignored)."""
        out = []
        p = Path(path)
        if not p.exists():
            return out
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a crash mid-write
        return out


def _drop_torn_tail(path: Path) -> None:
    """Make `path` end with a newline: keep a last line that is complete JSON, cut one that is not."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1  # 0 when the whole file is one line
    try:
        json.loads(data[cut:])
        complete = True
    except ValueError:
        complete = False
    with open(path, "r+b") as fh:
        if complete:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
