"""`svd` (FlexLoRA-style): for every LoRA pair, average the clients' full low-rank products
dW_k = B_k A_k (each at its own rank, sample-weighted), then re-factorize the average with a truncated
SVD to r_max: B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T (balanced split). By Eckart-Young the result is the
best rank-r_max approximation of the averaged product in Frobenius norm, and because the components are
ordered by singular value, a client later given rank r gets the best rank-r approximation. Parameters
without a rank dimension (the head) are a plain sample-weighted average.

The averaged product is formed densely (out x in, float64), one pair at a time, streamed client by
client; `stack` reaches the same factors from the thin stacked factors without the dense matrix."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fedranklite.federation.aggregation.base import AGGREGATORS, Contribution
from fedranklite.federation.aggregation.lowrank import client_factors, refactorize
from fedranklite.federation.ranks import State


def averaged_product(
    contributions: Sequence[Contribution],
    weights: Sequence[float],
    a: str,
    b: str,
    like_A: torch.Tensor,
    like_B: torch.Tensor,
) -> torch.Tensor:
    """sum_k w_k B_k A_k (float64, out x in) with each client at its declared rank."""
    dW = torch.zeros(like_B.shape[0], like_A.shape[1], dtype=torch.float64, device=like_A.device)
    for w, c in zip(weights, contributions):
        Bk, Ak = client_factors(c.state, a, b, c.rank, like_A.device)
        dW.addmm_(Bk, Ak, alpha=w)
    return dW


@AGGREGATORS.register("svd")
def svd(global_state: Mapping[str, torch.Tensor], contributions: Sequence[Contribution]) -> State:
    def pair_svd(contribs, w, a, b, gA, gB):
        return torch.linalg.svd(averaged_product(contribs, w, a, b, gA, gB), full_matrices=False)

    return refactorize(global_state, contributions, pair_svd)
