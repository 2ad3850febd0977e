"""Runs that cannot train: refused before the first round where it can be known, stopped where it shows.

A run whose every update is rejected or dropped still "finishes" and reports the untrained model's score as
final, which reads like a result. What can be known up front is refused (`refusals`): no tier's memory
holds the schedulers' lowest rank, a deadline that no client can meet even with one step (deterministic
timing only: measured time depends on this machine's load), training labels of one class, binary `f1` on a
multi-class task. What shows only while running (every update rejected: lr=inf, a diverging optimiser)
stops the run after `federation.stop_after_empty_rounds` rounds in a row whose updates were all rejected.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from fedranklite.data.scoring import binary_f1_problem
from fedranklite.federation.timing import comm_seconds

LUCK_SIGMAS = 3.0  # a client's compute time jitters (jitter_sigma): refuse only if even 3-sigma luck misses


class RunRefused(ValueError):
    """A valid config that cannot train; the message names the key to change."""


class RunStopped(RuntimeError):
    """A run stopped because no update was aggregated for `stop_after_empty_rounds` rounds in a row."""


def memory_problem(rank_caps: dict[str, int], r_min: int, batch_size: int, max_length: int) -> Optional[str]:
    """No tier's memory holds even rank 1 (a client whose memory holds less than r_min trains at what fits:
    Scheduler.bounds; only when nothing fits can no client train)."""
    if max(rank_caps.values(), default=0) >= 1:
        return None
    caps = ", ".join(f"{tier} {cap}" for tier, cap in rank_caps.items())
    return (
        f"tiers: no tier's memory_gb holds even rank 1 at batch {batch_size} x {max_length} tokens "
        f"(largest ranks that fit: {caps}); raise a tier's memory_gb, or lower training.batch_size or "
        "model.max_length"
    )


def label_problem(train_labels: np.ndarray, num_labels: int, metric: str, regression: bool) -> Optional[str]:
    if regression:
        return None
    classes = np.unique(train_labels)
    if len(classes) < 2:
        return (
            f"data: the training rows hold one class only (class {int(classes[0]) if len(classes) else '-'}, "
            f"{len(train_labels)} rows): a classifier cannot learn from them"
        )
    f1 = binary_f1_problem(metric, num_labels)
    return f"evaluation.metric: {f1}" if f1 else None


def deadline_problem(engine) -> Optional[str]:
    """Whether every client misses the deadline even at its smallest rank, doing the least work the straggler
    policy still accepts (use_partial: one step; drop: all its planned steps); None with `wait` or
    measured timing."""
    cfg, fed = engine.cfg, engine.fed
    deadline = cfg.deadline.seconds
    if deadline is None or not engine.policy.stops_at_deadline or not engine.time_model.deterministic:
        return None
    hw, settings = fed.hardware, engine.settings
    r_min = cfg.federation.scheduler.r_min
    best = math.inf
    for c in range(fed.num_clients):
        cap = int(fed.max_rank[c])
        if cap <= 0:
            continue
        rank = min(r_min, cap)
        rows = int(fed.rows[c])
        planned = settings.planned_samples(rows)
        samples = min(settings.batch_size, planned) if engine.policy.name == "use_partial" else planned
        size = fed.bytes_fixed + rank * fed.bytes_per_rank
        luck = math.exp(-LUCK_SIGMAS * float(hw.jitter_sigma[c]))
        seconds = comm_seconds(size, hw.downlink_mbps[c]) + comm_seconds(size, hw.uplink_mbps[c])
        seconds += engine.time_model.compute_seconds(samples, rank, float(hw.compute_factor[c])) * luck
        best = min(best, seconds)
    if best <= deadline or not math.isfinite(best):
        return None
    work = "one local step" if engine.policy.name == "use_partial" else "its planned local steps"
    return (
        f"deadline.seconds: {deadline:g} s, but the fastest client needs {best:.3g} s for {work} at rank "
        f"{r_min} (communication included, {cfg.timing.mode} timing): with straggler_policy "
        f"{engine.policy.name} no update would ever be aggregated; raise deadline.seconds or use "
        "straggler_policy: wait"
    )


def refusals(engine, train_labels: np.ndarray, num_labels: int, rank_caps: dict[str, int]) -> list[str]:
    cfg = engine.cfg
    found = [
        memory_problem(rank_caps, cfg.federation.scheduler.r_min, cfg.training.batch_size, cfg.model.max_length),
        label_problem(train_labels, num_labels, engine.metric, engine.settings.regression),
        deadline_problem(engine),
    ]
    return [p for p in found if p]


def aggregated_nothing(statuses: Sequence[str]) -> Optional[bool]:
    """True: updates arrived and were rejected, and not one reached the aggregation (the evidence of a run
    that cannot learn: NaN updates, a diverging optimiser); False: some update was aggregated; None: nothing
    either way (no client could run, every one was lost or only dropped at the deadline: with random
    selection a few slow-only rounds in a row happen to runs that learn), so such a round neither counts
    nor breaks a streak. A deadline nobody can meet is refused before the first round instead."""
    if any(s in ("accepted", "partial") for s in statuses):
        return False
    if "rejected" in statuses:
        return True
    return None


def stop_message(records: Sequence, k: int) -> Optional[str]:
    """Why to stop after the last round: the last `k` rounds in which clients answered aggregated nothing
    (None: go on)."""
    if not records or not aggregated_nothing(records[-1].clients.columns["status"]):
        return None  # the last round aggregated something, or says nothing either way
    streak: list = []
    for rec in reversed(records):
        empty = aggregated_nothing(rec.clients.columns["status"])
        if empty is False:
            break
        if empty:
            streak.append(rec)
        if len(streak) == k:
            break
    if len(streak) < k:
        return None
    last = records[-1]
    statuses = Counter(last.clients.columns["status"])
    counted = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no client could train"
    reasons = [r for r in last.rejected.values() if r]
    why = f"; e.g. {reasons[0]}" if reasons else ""
    return (
        f"no client update was aggregated in {k} rounds in a row ({streak[-1].round}-{last.round}; round {last.round}: "
        f"{counted}{why}): the run cannot learn as configured (federation.stop_after_empty_rounds={k})"
    )
