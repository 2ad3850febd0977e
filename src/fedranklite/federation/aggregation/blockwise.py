"""`blockwise`: rank slice j of every LoRA factor is averaged (sample-weighted) over only the clients
whose rank covered j; a slice nobody trained this round keeps its previous global value. Parameters
without a rank dimension (the head) are a plain weighted average over all clients."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fedranklite.federation.aggregation.base import AGGREGATORS, Contribution, normalized_weights, weighted_sum
from fedranklite.federation.ranks import State, rank_dim


@AGGREGATORS.register("blockwise")
def blockwise(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    if not contributions:
        return dict(global_state)
    w = normalized_weights(contributions).tolist()
    out: State = {}
    for name, current in global_state.items():
        axis = rank_dim(name)
        summed, covered = weighted_sum(name, contributions, w, current, axis)
        if axis is None:
            out[name] = summed.to(current.dtype)
            continue
        view = [1] * current.dim()
        view[axis] = current.shape[axis]
        covered = covered.to(current.device).view(view)  # weight of the clients that trained slice j
        averaged = summed / covered.clamp_min(1e-300)
        out[name] = torch.where(covered > 0, averaged, current.to(torch.float64)).to(current.dtype)
    return out
