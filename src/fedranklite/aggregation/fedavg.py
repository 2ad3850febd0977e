"""`fedavg` with zero padding: every rank-r update is padded with zeros to r_max, then all updates
are averaged with sample weights. Rank slices that few clients trained are pulled towards zero in
proportion to the weight of the clients that did not train them (the HetLoRA observation)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..ranks import State, rank_dim
from .base import AGGREGATORS, Contribution, normalized_weights, stacked


@AGGREGATORS.register("fedavg")
def fedavg(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    if not contributions:
        return dict(global_state)
    w = normalized_weights(contributions)
    out: State = {}
    for name, current in global_state.items():
        stack = stacked(name, contributions, current, rank_dim(name))
        avg = torch.tensordot(w.to(stack.device), stack, dims=1)  # global state may live on the GPU
        out[name] = avg.to(current.dtype)
    return out
