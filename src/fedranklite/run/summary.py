"""The run summary (metrics.json), computed from the round records alone, so it can be recomputed from
rounds.jsonl at any time; and the per-round quantities it is made of (fairness, target reached)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from fedranklite.core.records import RoundRecord, RunSummary, TimeToTarget


def fairness(losses: Sequence[Optional[float]], percentiles: Sequence[float]) -> dict[str, Optional[float]]:
    """Percentiles of the per-client losses (linear interpolation), keyed p10, p50, ..."""
    values = np.asarray([v for v in losses if v is not None and math.isfinite(v)], dtype=np.float64)
    return {f"p{p:g}": float(np.percentile(values, p)) if values.size else None for p in percentiles}


def reached(score: Optional[float], target: Optional[float], higher_is_better: bool) -> bool:
    if score is None or target is None or not math.isfinite(score):
        return False
    return score >= target if higher_is_better else score <= target


def time_to_target(
    records: Sequence[RoundRecord], target: Optional[float], higher_is_better: bool = True
) -> TimeToTarget:
    """First round (and its cumulative simulated seconds) whose evaluation score reached the target."""
    for rec in records:
        if reached(rec.score, target, higher_is_better):
            return TimeToTarget(rec.round, rec.sim_time)
    return TimeToTarget()


def run_warnings(
    final_eval: Optional[dict], final_score: Optional[float], baseline: Optional[dict], higher_is_better: bool = True
) -> list[str]:
    """What a reader of the summary must not miss: a final model that predicts one class for every row, a
    final score no better than the trivial baseline (scoring.trivial_baseline)."""
    out = []
    if final_eval and final_eval.get("predicted_classes") == 1:
        out.append("the final model predicts a single class for every evaluation row (collapsed)")
    if baseline and baseline.get("score") is not None and final_score is not None:
        base = baseline["score"]
        if not (final_score > base if higher_is_better else final_score < base):
            out.append(
                f"the final score {final_score:.4f} is not better than the trivial baseline {base:.4f} "
                f"({baseline['predictor']})"
            )
    return out


def summarize(
    records: Sequence[RoundRecord],
    *,
    target: Optional[float],
    metric: str,
    higher_is_better: bool = True,
    percentiles: Sequence[float] = (10, 50, 90),
    run: Optional[dict[str, Any]] = None,
    per_client_maps: bool = True,
) -> RunSummary:
    """The run summary. `per_client_maps`: each round's line lists ranks and bytes per client (False for
    thousands of clients per round: counts and means instead)."""
    evaluated = [r for r in records if r.score is not None]
    tables = [rec.clients for rec in records]

    def joined(name: str, dtype) -> np.ndarray:
        if not tables:
            return np.zeros(0, dtype)
        if dtype is np.float64:
            return np.concatenate([t.floats(name) for t in tables])
        return np.concatenate([np.asarray(t.columns[name], dtype=dtype) for t in tables])

    cid, up, down = joined("cid", np.int64), joined("bytes_up", np.int64), joined("bytes_down", np.int64)
    memory = joined("peak_memory_mb", np.float64)
    clients, inverse = np.unique(cid, return_inverse=True)
    up_per = np.bincount(inverse, weights=up, minlength=len(clients)) if len(cid) else np.zeros(0)
    down_per = np.bincount(inverse, weights=down, minlength=len(clients)) if len(cid) else np.zeros(0)
    rounds_per = np.bincount(inverse, minlength=len(clients)) if len(cid) else np.zeros(0, np.int64)
    peak = np.full(len(clients), -np.inf)
    np.maximum.at(peak, inverse, np.where(np.isnan(memory), -np.inf, memory))
    up_total, down_total = int(up.sum()), int(down.sum())
    n_part = max(len(cid), 1)
    compliant = [bool(r.compliant) for r in records]
    stragglers_total = int(sum(len(r.stragglers) for r in records))
    finite = [r.score for r in evaluated if math.isfinite(r.score)]  # max() with a NaN is order-dependent
    best = (max(finite) if higher_is_better else min(finite)) if finite else None
    return RunSummary(
        rounds_completed=len(records),
        metric=metric,
        higher_is_better=higher_is_better,
        target=target,
        final_score=evaluated[-1].score if evaluated else None,
        best_score=best,
        time_to_target=time_to_target(records, target, higher_is_better),
        sim_time_total=records[-1].sim_time if records else 0.0,
        wall_time_total=float(sum(r.wall_seconds for r in records)),
        # a round is compliant when no selected client missed the deadline; with thousands of clients per
        # round the client-level share is the telling one
        deadline_compliance_pct=100.0 * sum(compliant) / len(compliant) if compliant else None,
        client_compliance_pct=100.0 * (1 - stragglers_total / n_part) if len(cid) else None,
        stragglers_total=stragglers_total,
        fairness_final=records[-1].fairness if records else None,
        fairness_mean=_mean_dicts(r.fairness for r in records),
        bytes={
            "up_total": up_total,
            "down_total": down_total,
            "up_per_client_per_round": up_total / n_part,
            "down_per_client_per_round": down_total / n_part,
            "per_client": {
                str(c): {"up": int(u), "down": int(d), "rounds": int(n)}
                for c, u, d, n in zip(clients.tolist(), up_per, down_per, rounds_per)
            },
        },
        peak_memory_mb={str(c): float(m) for c, m in zip(clients.tolist(), peak) if m > -np.inf},
        rounds=[_round_line(r, per_client_maps) for r in records],
        run=dict(run or {}),
    )


def _round_line(record: RoundRecord, per_client_maps: bool) -> dict:
    out = {
        "round": record.round,
        "score": record.score,
        "sim_time": record.sim_time,
        "round_sim_seconds": record.round_sim_seconds,
        "compliant": record.compliant,
        "stragglers": record.stragglers,
        "fairness": record.fairness,
    }
    t = record.clients
    if per_client_maps:
        out.update(
            ranks={str(c): r for c, r in record.ranks.items()},
            bytes_up={str(c): int(b) for c, b in zip(t.cid, t.bytes_up)},
            bytes_down={str(c): int(b) for c, b in zip(t.cid, t.bytes_down)},
        )
    else:
        ranks = np.asarray(t.rank, dtype=np.float64)
        out.update(
            num_clients=len(ranks),
            stragglers=len(record.stragglers),
            rank_mean=float(ranks.mean()) if ranks.size else None,
            bytes_up=int(np.sum(t.bytes_up)),
            bytes_down=int(np.sum(t.bytes_down)),
        )
    return out


def _mean_dicts(dicts: Iterable[Optional[dict]]) -> dict:
    acc: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if v is not None:
                acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}
