"""The aggregation interface: pure functions from (global state, client contributions) to a new state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from fedranklite.core.registry import PluginConfig, Registry
from fedranklite.federation.ranks import State


@dataclass(frozen=True)
class Contribution:
    """One accepted client update as the aggregator sees it."""

    state: Mapping[str, torch.Tensor]  # rank-`rank` LoRA factors + head, as the client sent them
    rank: int
    weight: float  # usually the number of samples the client trained on


class AggregatorParams(PluginConfig):
    """The built-in aggregators have no parameters; one that needs some subclasses this next to it."""


Aggregator = Callable[[Mapping[str, torch.Tensor], Sequence[Contribution]], State]
AGGREGATORS: Registry[Aggregator] = Registry("aggregation", base=AggregatorParams)


def normalized_weights(contributions: Sequence[Contribution]) -> torch.Tensor:
    w = torch.tensor([float(c.weight) for c in contributions], dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("aggregation weights must be non-negative with a positive sum")
    return w / w.sum()


def weighted_sum(
    name: str,
    contributions: Sequence[Contribution],
    weights: Sequence[float],
    like: torch.Tensor,
    rank_axis: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum_k w_k * (client k's tensor zero-padded to `like`'s shape), in float64, streamed client by
    client (memory independent of the number of clients, time linear in it). For a LoRA factor also
    returns, per rank slice j, the total weight of the clients whose rank covered j."""
    acc = torch.zeros(like.shape, dtype=torch.float64, device=like.device)
    covered = None if rank_axis is None else torch.zeros(like.shape[rank_axis], dtype=torch.float64)
    for w, c in zip(weights, contributions):
        t = c.state[name].to(device=like.device, dtype=torch.float64)
        if rank_axis is None:
            acc.add_(t, alpha=w)
        else:
            acc.narrow(rank_axis, 0, t.shape[rank_axis]).add_(t, alpha=w)
            covered[: c.rank] += w  # the declared rank, even if the tensor arrived zero-padded
    return acc, covered
