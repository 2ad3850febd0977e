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


def client_columns(record: dict) -> dict[str, list]:
    """A round record's per-client fields as columns ({field: [one value per client]}), whichever way the
    record stores them: `clients` (a list of dicts, metrics.client_records: full) or `client_columns`
    (metrics.client_records: columns, for runs with thousands of clients per round)."""
    if "client_columns" in record:
        return record["client_columns"]
    clients = record["clients"]
    keys = clients[0].keys() if clients else ()
    return {k: [c.get(k) for c in clients] for k in keys}


def _column(cols: dict[str, list], key: str, dtype=np.float64) -> np.ndarray:
    values = cols.get(key, [])
    if dtype is np.float64:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray(values, dtype=dtype)


def summarize(records: Sequence[dict], *, target: Optional[float], metric: str, higher_is_better: bool = True,
              percentiles: Sequence[float] = (10, 50, 90), extra: Optional[dict] = None) -> dict[str, Any]:
    """The run summary written to metrics.json, computed from the round records alone."""
    evaluated = [r for r in records if r.get("score") is not None]
    tables = [client_columns(rec) for rec in records]
    cid = np.concatenate([_column(t, "cid", np.int64) for t in tables]) if tables else np.zeros(0, np.int64)
    up = np.concatenate([_column(t, "bytes_up", np.int64) for t in tables]) if tables else np.zeros(0, np.int64)
    down = np.concatenate([_column(t, "bytes_down", np.int64) for t in tables]) if tables else np.zeros(0, np.int64)
    memory = np.concatenate([_column(t, "peak_memory_mb") for t in tables]) if tables else np.zeros(0)
    clients, inverse = np.unique(cid, return_inverse=True)
    up_per = np.bincount(inverse, weights=up, minlength=len(clients)) if len(cid) else np.zeros(0)
    down_per = np.bincount(inverse, weights=down, minlength=len(clients)) if len(cid) else np.zeros(0)
    rounds_per = np.bincount(inverse, minlength=len(clients)) if len(cid) else np.zeros(0, np.int64)
    peak = np.full(len(clients), -np.inf)
    np.maximum.at(peak, inverse, np.where(np.isnan(memory), -np.inf, memory))
    up_total, down_total = int(up.sum()), int(down.sum())
    n_part = max(len(cid), 1)
    compliant = [bool(r["compliant"]) for r in records]
    stragglers_total = int(sum(len(r["stragglers"]) for r in records))
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
        # a round is compliant when no selected client missed the deadline; with thousands of clients per
        # round the client-level share is the telling one
        "deadline_compliance_pct": 100.0 * sum(compliant) / len(compliant) if compliant else None,
        "client_compliance_pct": 100.0 * (1 - stragglers_total / n_part) if len(cid) else None,
        "stragglers_total": stragglers_total,
        "fairness_final": records[-1]["fairness"] if records else None,
        "fairness_mean": _mean_dicts([r["fairness"] for r in records]),
        "bytes": {
            "up_total": up_total,
            "down_total": down_total,
            "up_per_client_per_round": up_total / n_part,
            "down_per_client_per_round": down_total / n_part,
            "per_client": {str(c): {"up": int(u), "down": int(d), "rounds": int(n)}
                           for c, u, d, n in zip(clients.tolist(), up_per, down_per, rounds_per)},
        },
        "peak_memory_mb": {str(c): float(m) for c, m in zip(clients.tolist(), peak) if m > -np.inf},
        "rounds": [_round_summary(r, t) for r, t in zip(records, tables)],
    }
    if extra:
        summary = {**extra, **summary}
    return summary


def _round_summary(record: dict, cols: dict[str, list]) -> dict:
    out = {"round": record["round"], "score": record.get("score"), "sim_time": record["sim_time"],
           "round_sim_seconds": record["round_sim_seconds"], "compliant": record["compliant"],
           "stragglers": record["stragglers"], "fairness": record["fairness"]}
    if "clients" in record:  # per-client maps only where the record keeps per-client dicts
        out.update(ranks=record["ranks"],
                   bytes_up={str(c): b for c, b in zip(cols.get("cid", []), cols.get("bytes_up", []))},
                   bytes_down={str(c): b for c, b in zip(cols.get("cid", []), cols.get("bytes_down", []))})
    else:
        ranks = np.asarray(cols.get("rank", []), dtype=np.float64)
        out.update(num_clients=len(ranks), stragglers=len(record["stragglers"]),
                   rank_mean=float(ranks.mean()) if ranks.size else None,
                   bytes_up=int(np.sum(cols.get("bytes_up", []))), bytes_down=int(np.sum(cols.get("bytes_down", []))))
    return out


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
