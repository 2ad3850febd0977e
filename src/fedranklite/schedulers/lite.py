"""`lite`: the project's O(N) rank rule.

    score_i = gain_w * EMA(loss_drop_i) + thr_w * EMA(throughput_i)     (x deadline_penalty if the
                                                                          client missed its last deadline)
    rank_i  = clamp(round(score_i / sum(score) * budget), r_min, r_max_i),   budget = r_bar * num_selected
    then a greedy correction so that sum(rank) == budget exactly.

With `normalize` (the default) each EMA is divided by its mean over the selected clients before the
weights apply, so loss drops (~0.1) and throughputs (~100 samples/s) are on one scale and the weights
are relative importances; `normalize: false` applies the weights to the raw EMAs. Negative EMAs (a
client whose loss rose) count as 0, so a score is never negative.

Cold start: a client never observed takes the mean EMA of the observed clients in the selection
(negative EMAs counted as 0, as they are in their own scores), separately for loss drop and
throughput; when none is observed every score is equal and the budget is split evenly.

State is kept in arrays indexed by client id, so a round costs O(N) vectorised work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from .base import SCHEDULERS, Clients, Reports, Scheduler, SchedulerParams, repair_to_budget

_EPS = 1e-12


class LiteParams(SchedulerParams):
    ema: float = Field(0.5, gt=0, le=1)  # weight of the newest observation
    gain_weight: float = Field(1.0, ge=0)  # weight of EMA(loss drop)
    throughput_weight: float = Field(0.5, ge=0)  # weight of EMA(throughput)
    deadline_penalty: float = Field(0.5, ge=0, le=1)  # score multiplier after a missed deadline
    normalize: bool = True  # divide each EMA by its mean over the selected clients (scale-free weights)


@SCHEDULERS.register("lite", LiteParams)
class LiteScheduler(Scheduler):
    def __init__(
        self,
        r_min: int,
        r_max: int,
        r_bar: float,
        ema: float = 0.5,
        gain_weight: float = 1.0,
        throughput_weight: float = 0.5,
        deadline_penalty: float = 0.5,
        normalize: bool = True,
    ):
        super().__init__(r_min, r_max, r_bar)
        self.ema, self.gain_weight, self.throughput_weight = float(ema), float(gain_weight), float(throughput_weight)
        self.deadline_penalty, self.normalize = float(deadline_penalty), bool(normalize)
        self.gain_ema = np.full(0, np.nan)  # NaN = never observed
        self.throughput_ema = np.full(0, np.nan)
        self.missed = np.zeros(0, dtype=bool)

    def _grow(self, max_cid: int) -> None:
        n = max_cid + 1
        if n > self.gain_ema.size:
            pad = n - self.gain_ema.size
            self.gain_ema = np.concatenate([self.gain_ema, np.full(pad, np.nan)])
            self.throughput_ema = np.concatenate([self.throughput_ema, np.full(pad, np.nan)])
            self.missed = np.concatenate([self.missed, np.zeros(pad, dtype=bool)])

    def scores(self, clients: Clients) -> np.ndarray:
        # Written for speed: a dozen 1-D numpy calls, in place where possible (the rule is O(N)).
        n = len(clients)
        if n == 0:
            return np.zeros(0)
        cid = clients.cid
        self._grow(int(cid.max()))
        # clamp first (np.maximum keeps NaN = unobserved), so a newcomer gets the mean of what the
        # observed clients actually count with, not a mean dragged below zero by a rising loss
        gain = np.maximum(self.gain_ema.take(cid), 0.0)
        thr = np.maximum(self.throughput_ema.take(cid), 0.0)
        if np.isnan(gain.sum() + thr.sum()):  # some client never observed
            gain, thr = _with_cold_start(gain), _with_cold_start(thr)
        gain_w, thr_w = self.gain_weight, self.throughput_weight
        if self.normalize:  # divide each EMA by its mean over the selection
            gain_w = gain_w * n / max(float(gain.sum()), _EPS)
            thr_w = thr_w * n / max(float(thr.sum()), _EPS)
        gain *= gain_w
        thr *= thr_w
        gain += thr
        missed = self.missed.take(cid)
        if missed.any():
            gain *= np.where(missed, self.deadline_penalty, 1.0)
        return gain

    def assign(self, clients: Clients) -> np.ndarray:
        lo, hi = self.bounds(clients)
        budget = self.budget(len(clients))
        score = self.scores(clients)
        total = score.sum()
        share = score / total if total > _EPS else np.full(len(clients), 1.0 / max(len(clients), 1))
        return repair_to_budget(share * budget, lo, hi, budget)

    def observe(self, reports: Reports) -> None:
        if len(reports) == 0:
            return
        self._grow(int(reports.cid.max()))
        self.gain_ema[reports.cid] = _ema(self.gain_ema[reports.cid], reports.loss_drop, self.ema)
        self.throughput_ema[reports.cid] = _ema(self.throughput_ema[reports.cid], reports.throughput, self.ema)
        self.missed[reports.cid] = reports.missed_deadline

    def state_dict(self) -> dict[str, Any]:
        return {
            "gain_ema": self.gain_ema.tolist(),
            "throughput_ema": self.throughput_ema.tolist(),
            "missed": self.missed.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gain_ema = np.array(state["gain_ema"], dtype=np.float64)
        self.throughput_ema = np.array(state["throughput_ema"], dtype=np.float64)
        self.missed = np.array(state["missed"], dtype=bool)


def _ema(old: np.ndarray, new: np.ndarray, weight: float) -> np.ndarray:
    """EMA update; the first observation initialises it; a non-finite observation leaves it as it was."""
    updated = np.where(np.isnan(old), new, weight * new + (1 - weight) * old)
    return np.where(np.isfinite(new), updated, old)


def _with_cold_start(values: np.ndarray) -> np.ndarray:
    """Replace unobserved (NaN) entries by the mean of the observed ones (1.0 when nobody was observed)."""
    seen = ~np.isnan(values)
    fill = float(values[seen].mean()) if seen.any() else 1.0
    return np.where(seen, values, fill)
