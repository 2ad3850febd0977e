"""Moving LoRA adapters between ranks: pure tensor functions, no model.

A LoRA pair at rank r_max stores A with shape (r_max, in) and B with shape (out, r_max); its
update is dW = scale * B @ A. Rank r uses the first r rows of A and the first r columns of B.
Parameters without a rank dimension (the task head) pass through unchanged.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

State = dict[str, torch.Tensor]


def rank_dim(name: str) -> Optional[int]:
    """Which dimension of parameter `name` is the LoRA rank (None: not a LoRA factor)."""
    if "lora_A" in name:
        return 0
    if "lora_B" in name:
        return 1
    return None


def tensor_rank(name: str, tensor: torch.Tensor) -> Optional[int]:
    dim = rank_dim(name)
    return None if dim is None else int(tensor.shape[dim])


def truncate(state: Mapping[str, torch.Tensor], rank: int) -> State:
    """The rank-`rank` slice of every LoRA factor (what the server sends a rank-`rank` client)."""
    out: State = {}
    for name, tensor in state.items():
        dim = rank_dim(name)
        out[name] = tensor if dim is None else tensor.narrow(dim, 0, min(rank, tensor.shape[dim])).clone()
    return out


def pad(state: Mapping[str, torch.Tensor], r_max: int) -> State:
    """Zero-pad every LoRA factor back to `r_max` (what the server does with a rank-r update)."""
    out: State = {}
    for name, tensor in state.items():
        dim = rank_dim(name)
        if dim is None or tensor.shape[dim] == r_max:
            out[name] = tensor
            continue
        if tensor.shape[dim] > r_max:
            raise ValueError(f"{name}: rank {tensor.shape[dim]} exceeds r_max={r_max}")
        shape = list(tensor.shape)
        shape[dim] = r_max - tensor.shape[dim]
        out[name] = torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)
    return out


def num_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors as they are sent: elements x element size of their dtype."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))
