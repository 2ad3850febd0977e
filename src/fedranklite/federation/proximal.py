"""FedProx's proximal term (Li et al., MLSys 2020): a client adds

    mu / 2 * sum_p ||w_p - w0_p||^2

to the loss of every local step, w0 being the parameters it received at the start of the round, so its
gradient gains mu * (w - w0): a pull back towards the global adapter that limits how far a client with
skewed data drifts in one round. The sum runs over what the client trains (the LoRA factors and the
head); rank-masked LoRA slices are zero in both w and w0, so they add nothing.

`training.proximal_mu` sets mu; 0 (the default) skips the term entirely, so a run without it follows
exactly the code path it followed before the option existed.
"""

from __future__ import annotations

from typing import Sequence

import torch


def anchors(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of the parameters as the round starts (the w0 of the term)."""
    return [p.detach().clone() for p in params]


def proximal_term(params: Sequence[torch.Tensor], start: Sequence[torch.Tensor], mu: float) -> torch.Tensor:
    """mu / 2 * sum_p ||params_p - start_p||^2, differentiable in `params` (float32 at least, like the loss)."""
    if len(params) != len(start):
        raise ValueError(f"{len(params)} parameters but {len(start)} anchors")
    total = torch.zeros((), dtype=torch.float32, device=params[0].device if params else None)
    for p, p0 in zip(params, start):
        total = total + (p.float() - p0.float()).square().sum()
    return 0.5 * mu * total
