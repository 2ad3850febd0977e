"""Robust aggregators for heterogeneous ranks: `median`, `trimmed_mean` and `krum`.

How heterogeneous ranks are handled (the same rule as `blockwise`): rank slice j of a LoRA factor is
aggregated over the clients whose rank covered j only; a slice nobody trained keeps its global value; a
tensor without a rank axis (the head) over every client. Sample weights are ignored by the coordinate-wise
rules on purpose: a weight is the client's own claim, and a weighted median gives a liar the median.

- `median`: coordinate-wise median of the covering clients' values (Yin et al. 2018). One value per
  coordinate is chosen from what honest clients sent as long as attackers are fewer than half of the
  covering clients.
- `trimmed_mean`: per coordinate, the `trim` fraction of the covering clients' values is cut at each end
  (floor(trim * k) each side, k covering clients) and the rest averaged.
- `krum` (Blanchard et al. 2017): every update becomes a delta from the global adapter; two clients' distance
  is the mean squared difference over the coordinates both trained (so a higher rank is not by itself
  "far"); a client's score is the sum of distances to its k = n - f - 2 nearest others; the `keep`
  lowest-scoring updates (1: Krum, n - f by default: multi-Krum) are averaged
  with `blockwise` and their sample weights. The guarantee needs n >= 2f + 3 updates; with fewer, k is at
  least 1 and a note says the guarantee does not hold.

None of these stops a majority, nor a small consistent bias inside the honest spread (e.g. a backdoor);
with non-IID clients, honest but unusual updates are the ones trimmed away. The median of the A and B
factors is not the median of the products B·A: the bounds hold per factor.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Optional, Sequence

import torch
from pydantic import Field

from fedranklite.federation.aggregation.base import AGGREGATORS, AggregatorParams, Contribution
from fedranklite.federation.aggregation.blockwise import blockwise
from fedranklite.federation.ranks import State, rank_dim

log = logging.getLogger(__name__)


def _padded_stack(name: str, contributions: Sequence[Contribution], like: torch.Tensor) -> torch.Tensor:
    """(n, *like.shape) float64: each client's tensor padded along the rank axis with NaN where the client's
    declared rank did not reach (those coordinates are not its to vote on)."""
    axis = rank_dim(name)
    out = torch.full((len(contributions), *like.shape), math.nan, dtype=torch.float64)
    for i, c in enumerate(contributions):
        t = c.state[name].to(torch.float64)
        if axis is None:
            out[i] = t
        else:
            out[i].narrow(axis, 0, min(c.rank, like.shape[axis])).copy_(t.narrow(axis, 0, min(c.rank, t.shape[axis])))
    return out


def _coordinatewise(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution], reduce) -> State:
    """Apply `reduce(values (k, ...)) -> (...)` per coordinate over the clients that hold it."""
    if not contributions:
        return dict(global_state)
    out: State = {}
    for name, current in global_state.items():
        stacked = _padded_stack(name, contributions, current)
        axis = rank_dim(name)
        if axis is None:
            out[name] = reduce(stacked).to(current.dtype)
            continue
        result = current.to(torch.float64).clone()
        for j in range(current.shape[axis]):  # slice j: only the clients whose rank covered it
            slice_j = stacked.narrow(axis + 1, j, 1)
            holders = ~torch.isnan(slice_j.reshape(len(contributions), -1)[:, 0])
            if holders.any():
                result.narrow(axis, j, 1).copy_(reduce(slice_j[holders]))
        out[name] = result.to(current.dtype)
    return out


def coordinate_median(values: torch.Tensor) -> torch.Tensor:
    """The median over axis 0 (the mean of the two middle values for an even count, unlike torch.median)."""
    k = values.shape[0]
    ordered = values.sort(dim=0).values
    return (ordered[(k - 1) // 2] + ordered[k // 2]) / 2


def trimmed_mean(values: torch.Tensor, trim: float) -> torch.Tensor:
    k = values.shape[0]
    cut = int(math.floor(trim * k))
    if k - 2 * cut < 1:
        cut = (k - 1) // 2
    ordered = values.sort(dim=0).values
    return ordered[cut : k - cut].mean(dim=0)


@AGGREGATORS.register("median")
def median(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    return _coordinatewise(global_state, contributions, coordinate_median)


class TrimmedMeanParams(AggregatorParams):
    trim: float = Field(0.1, ge=0, lt=0.5)  # fraction cut at each end, per coordinate


@AGGREGATORS.register("trimmed_mean", TrimmedMeanParams)
class TrimmedMean:
    def __init__(self, trim: float = 0.1):
        self.trim = trim

    @classmethod
    def from_config(cls, params: TrimmedMeanParams) -> "TrimmedMean":
        return cls(params.trim)

    def __call__(self, global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
        return _coordinatewise(global_state, contributions, lambda v: trimmed_mean(v, self.trim))


class KrumParams(AggregatorParams):
    f: int = Field(1, ge=0)  # attackers assumed among the round's updates
    keep: Optional[int] = Field(None, ge=1)  # updates averaged: 1 = Krum; null = n - f (multi-Krum)


def pairwise_distances(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> torch.Tensor:
    """(n, n) mean squared difference of two clients' deltas from the global adapter over the coordinates
    both trained (rank slices below both ranks, and the head). Over zero-padded deltas instead, a higher
    rank means more non-zero coordinates and a larger distance to everyone: Krum would leave out honest
    high-rank clients first (measured: a rank-8 client among rank-2 ones, always)."""
    n = len(contributions)
    parts = []
    for name, current in global_state.items():
        parts.append((_padded_stack(name, contributions, current) - current.to(torch.float64)).reshape(n, -1))
    x = torch.cat(parts, dim=1)
    held = (~torch.isnan(x)).to(torch.float64)
    x = torch.nan_to_num(x, nan=0.0)
    sq = x.square()
    shared = held @ held.T
    # sum over shared coordinates of (x_i - x_j)^2 = sum x_i^2 [j holds] + sum x_j^2 [i holds] - 2 x_i . x_j
    total = sq @ held.T + held @ sq.T - 2 * (x @ x.T)
    return (total / shared.clamp_min(1.0)).clamp_min(0.0)


def krum_scores(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution], f: int) -> list[float]:
    """Krum's score of every update: the sum of its distances (`pairwise_distances`) to its n - f - 2 nearest
    others (at least 1)."""
    n = len(contributions)
    dist = pairwise_distances(global_state, contributions)
    neighbours = max(1, n - f - 2)
    scores = []
    for i in range(n):
        others = torch.cat([dist[i, :i], dist[i, i + 1 :]])
        scores.append(float(others.sort().values[:neighbours].sum()) if len(others) else 0.0)
    return scores


@AGGREGATORS.register("krum", KrumParams)
class Krum:
    def __init__(self, f: int = 1, keep: Optional[int] = None):
        self.f, self.keep = f, keep

    @classmethod
    def from_config(cls, params: KrumParams) -> "Krum":
        return cls(params.f, params.keep)

    def select(self, global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> list[int]:
        n = len(contributions)
        if n < 2 * self.f + 3:
            log.warning(
                "krum: %d updates for f=%d (needs >= %d): the Krum bound does not hold", n, self.f, 2 * self.f + 3
            )
        keep = self.keep if self.keep is not None else max(1, n - self.f)
        scores = krum_scores(global_state, contributions, self.f)
        return sorted(range(n), key=lambda i: (scores[i], i))[: min(keep, n)]

    def __call__(self, global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
        if not contributions:
            return dict(global_state)
        chosen = self.select(global_state, contributions)
        return blockwise(global_state, [contributions[i] for i in sorted(chosen)])
