"""`blockwise`: rank slice j of every LoRA factor is averaged (sample-weighted) over only the clients
whose rank covered j; a slice nobody trained this round keeps its previous global value. Parameters
without a rank dimension (the head) are a plain weighted average over all clients."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..ranks import State, rank_dim
from .base import AGGREGATORS, Contribution, normalized_weights, stacked


@AGGREGATORS.register("blockwise")
def blockwise(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    if not contributions:
        return dict(global_state)
    w = normalized_weights(contributions)
    ranks = torch.tensor([c.rank for c in contributions])
    out: State = {}
    for name, current in global_state.items():
        axis = rank_dim(name)
        stack = stacked(name, contributions, current, axis)
        wd = w.to(stack.device)  # the global state may live on the GPU, the updates on the CPU
        if axis is None:
            out[name] = torch.tensordot(wd, stack, dims=1).to(current.dtype)
            continue
        r_max = current.shape[axis]
        covers = (torch.arange(r_max, device=stack.device)[None, :] < ranks.to(stack.device)[:, None]
                  ).to(torch.float64)  # (K, r_max)
        slice_w = wd[:, None] * covers  # weight of client k on slice j
        total = slice_w.sum(0)  # (r_max,)
        # sum_k slice_w[k, j] * stack[k, ..., j, ...] as one contraction (no K-sized temporary)
        letters = "abcdefgh"[: current.dim()]
        rank_letter = letters[axis]
        summed = torch.einsum(f"k{rank_letter},k{letters}->{letters}", slice_w, stack)
        view = [1] * current.dim()
        view[axis] = r_max
        averaged = summed / total.clamp_min(1e-300).view(view)
        kept = (total > 0).view(view)
        out[name] = torch.where(kept, averaged, current.to(torch.float64)).to(current.dtype)
    return out
