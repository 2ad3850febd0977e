"""The aggregation interface: pure functions from (global state, client contributions) to a new state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ..ranks import State
from ..registry import Registry


@dataclass(frozen=True)
class Contribution:
    """One accepted client update as the aggregator sees it."""

    state: Mapping[str, torch.Tensor]  # rank-`rank` LoRA factors + head, as the client sent them
    rank: int
    weight: float  # usually the number of samples the client trained on


Aggregator = Callable[[Mapping[str, torch.Tensor], Sequence[Contribution]], State]
AGGREGATORS: Registry[Aggregator] = Registry("aggregation")


def normalized_weights(contributions: Sequence[Contribution]) -> torch.Tensor:
    w = torch.tensor([float(c.weight) for c in contributions], dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("aggregation weights must be non-negative with a positive sum")
    return w / w.sum()


def stacked(name: str, contributions: Sequence[Contribution], like: torch.Tensor, rank_axis: int | None) -> torch.Tensor:
    """The clients' tensors for `name` zero-padded to `like`'s shape and stacked: shape (K, *like.shape)."""
    out = like.new_zeros((len(contributions), *like.shape), dtype=torch.float64)
    for k, c in enumerate(contributions):
        t = c.state[name].to(torch.float64)
        if rank_axis is None:
            out[k] = t
        else:
            out[k].narrow(rank_axis, 0, t.shape[rank_axis]).copy_(t)
    return out
