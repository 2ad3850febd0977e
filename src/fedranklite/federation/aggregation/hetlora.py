"""`hetlora` (HetLoRA-style): zero-padding average of the LoRA factors, like `fedavg`, but with weights
that also grow with the size of each client's update. For every LoRA pair (A, B) separately, client k's
weight is

    p_k = n_k * ||(A_k, B_k)||_F / sum_j n_j * ||(A_j, B_j)||_F,   ||(A, B)||_F = sqrt(||A||_F^2 + ||B||_F^2)

with n_k the client's sample weight and the norm taken over its rank-r_k factors as it sent them (zero
padding adds nothing). Then A = sum_k p_k pad(A_k), B = sum_k p_k pad(B_k), both with the same p. If every
client's pair has zero norm the weights fall back to n_k alone. Parameters without a rank dimension (the
head) are a plain sample-weighted average."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fedranklite.federation.aggregation.base import AGGREGATORS, Contribution, normalized_weights, weighted_sum
from fedranklite.federation.aggregation.lowrank import client_factors, head_average, lora_pairs
from fedranklite.federation.ranks import State, rank_dim


def norm_weights(contributions: Sequence[Contribution], a: str, b: str) -> list[float]:
    """The normalized weights p_k of one LoRA pair (see the module docstring)."""
    n = normalized_weights(contributions)
    norms = []
    for c in contributions:
        Bk, Ak = client_factors(c.state, a, b, c.rank)
        norms.append(float(torch.sqrt(Ak.square().sum() + Bk.square().sum())))
    p = n * torch.tensor(norms, dtype=torch.float64)
    if not torch.isfinite(p).all() or p.sum() <= 0:
        return n.tolist()
    return (p / p.sum()).tolist()


@AGGREGATORS.register("hetlora")
def hetlora(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    if not contributions:
        return dict(global_state)
    out: State = {}
    for a, b in lora_pairs(global_state):
        p = norm_weights(contributions, a, b)
        for name in (a, b):
            current = global_state[name]
            out[name] = weighted_sum(name, contributions, p, current, rank_dim(name))[0].to(current.dtype)
    w = normalized_weights(contributions).tolist()
    for name in global_state:
        if rank_dim(name) is None:
            out[name] = head_average(global_state, contributions, w, name)
    return {name: out[name] for name in global_state}
