"""`fedavg` with zero padding: every rank-r update is padded with zeros to r_max, then all updates
are averaged with sample weights. Rank slices that few clients trained are pulled towards zero in
proportion to the weight of the clients that did not train them (the HetLoRA observation)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fedranklite.federation.aggregation.base import AGGREGATORS, Contribution, normalized_weights, weighted_sum
from fedranklite.federation.ranks import State, rank_dim


@AGGREGATORS.register("fedavg")
def fedavg(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    if not contributions:
        return dict(global_state)
    w = normalized_weights(contributions).tolist()
    # zero padding is implicit: a rank-r update adds nothing to slices r.. of the weighted sum
    return {
        name: weighted_sum(name, contributions, w, current, rank_dim(name))[0].to(current.dtype)
        for name, current in global_state.items()
    }
