"""Shared pieces of the product-space aggregators (`svd`, `stack`, `hetlora`): pairing LoRA factors,
slicing a client's factors to its declared rank, and truncated-SVD factorizations of a low-rank product.

A LoRA pair is two parameters whose names differ only in `lora_A` / `lora_B`; A is (r, in) with the rank
on dim 0, B is (out, r) with the rank on dim 1, and the pair's update is dW = scale * B @ A with one scale
for every rank (see fedmodel.py), so the scale never enters the aggregation and is left out here.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import torch

from fedranklite.federation.aggregation.base import normalized_weights


def lora_pairs(state: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, str]]:
    """(A name, B name) of every LoRA pair of `state`, in state order."""
    for name in state:
        if "lora_A" in name:
            b = name.replace("lora_A", "lora_B")
            if b not in state:
                raise KeyError(f"{name} has no matching {b}")
            yield name, b


def client_factors(
    c_state: Mapping[str, torch.Tensor], a: str, b: str, rank: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's (B_k, A_k) at its declared rank in float64 (a zero-padded upload is cut back to `rank`)."""
    A = c_state[a].to(device=device, dtype=torch.float64)
    B = c_state[b].to(device=device, dtype=torch.float64)
    r = min(rank, A.shape[0], B.shape[1])
    return B[:, :r], A[:r]


def split_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, r_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-`r_max` factors of U diag(S) Vh with the *balanced* split B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T
    (both factors carry sqrt of each singular value, so neither blows up). Components come out in
    decreasing singular value, so a client that takes the first r rank slices gets the best rank-r
    approximation of the aggregate. Fewer than r_max components are padded with zero slices."""
    r = min(r_max, S.shape[0])
    root = S[:r].clamp_min(0).sqrt()
    B = U[:, :r] * root
    A = root[:, None] * Vh[:r]
    if r < r_max:
        B = torch.cat([B, B.new_zeros(B.shape[0], r_max - r)], dim=1)
        A = torch.cat([A, A.new_zeros(r_max - r, A.shape[1])], dim=0)
    return B, A


def factored_svd(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of the product B @ A (B: out x R, A: R x in) without forming it: QR of both thin factors,
    SVD of the small R x R core. Cost O((out + in) R^2 + R^3) instead of O(out * in * min(out, in))."""
    Qb, Rb = torch.linalg.qr(B)  # B = Qb Rb
    Qa, Ra = torch.linalg.qr(A.T)  # A = Ra^T Qa^T
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
    return Qb @ U, S, Vh @ Qa.T


def head_average(global_state: Mapping[str, torch.Tensor], contributions, weights, name: str) -> torch.Tensor:
    """Weighted average (float64 accumulation) of a parameter without a rank dimension."""
    current = global_state[name]
    acc = torch.zeros(current.shape, dtype=torch.float64, device=current.device)
    for w, c in zip(weights, contributions):
        acc.add_(c.state[name].to(device=current.device, dtype=torch.float64), alpha=w)
    return acc.to(current.dtype)


# (contributions, weights, A key, B key, global A, global B) -> SVD (U, S, Vh) of sum_k w_k B_k A_k
PairSVD = Callable[
    [Sequence, Sequence[float], str, str, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


def refactorize(global_state: Mapping[str, torch.Tensor], contributions: Sequence, pair_svd: PairSVD) -> dict:
    """The shared shape of the product-space aggregators (svd, stack): for every LoRA pair, the SVD of
    the weighted sum of the clients' products B_k A_k (computed by `pair_svd`), truncated and split back
    into rank-r_max factors; the head is a weighted average."""
    if not contributions:
        return dict(global_state)
    w = normalized_weights(contributions).tolist()
    out: dict = {}
    for a, b in lora_pairs(global_state):
        gA, gB = global_state[a], global_state[b]
        B, A = split_svd(*pair_svd(contributions, w, a, b, gA, gB), gA.shape[0])
        out[a], out[b] = A.to(gA.dtype), B.to(gB.dtype)
    for name in global_state:
        if name not in out:
            out[name] = head_average(global_state, contributions, w, name)
    return {name: out[name] for name in global_state}
