"""Rank-collapse diagnostics of the global adapter (pure, torch only).

Mixed-rank aggregation can concentrate the update's energy in the smallest shared rank while the higher
rank slices decay round after round. `rank_energy` summarizes, per LoRA module group, where the energy of
the adapter's update dW = B @ A sits. The engine records it every round as `rank_energy` in rounds.jsonl
and `fedranklite plot` draws it (rank_energy.png).

Definitions (dW is taken without the constant LoRA scale alpha / r_max, which is the same for every rank
slice and every round, so it would only multiply all energies by one number):

- group: the target module name, i.e. the name component just before `lora_A` / `lora_B`
  (`...layer.3.attention.self.query.lora_A.default.weight` -> `query`); a group sums over layers.
- energy of rank block j: ||B[:, j]||^2 * ||A[j, :]||^2, which is exactly the squared Frobenius norm of the
  rank-1 term B[:, j] A[j, :] that slice j adds to dW, summed over the group's modules. (The blocks are not
  orthogonal in general, so the block energies need not add up to ||dW||_F^2.)
- effective_rank: exp of the Shannon entropy of the normalized singular values p_i = s_i / sum s of each
  module's dW (Roy & Vetterli 2007), averaged over the group's modules; between 1 and r_max, 0 for dW = 0.
  Computed from QR of the thin factors, so dW is never formed.
- block_effective_rank: exp of the entropy of the normalized block energies e_j / sum e (how many rank
  slices carry the energy); 0 when every block is zero.
"""

from __future__ import annotations

from typing import Mapping

import torch

from fedranklite.federation.aggregation.lowrank import lora_pairs


def module_group(name: str) -> str:
    """The target module name of a LoRA parameter (the component before lora_A / lora_B)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in ("lora_A", "lora_B"):
            return parts[i - 1] if i > 0 else part
    raise ValueError(f"{name} is not a LoRA factor")


def exp_entropy(weights: torch.Tensor) -> float:
    """exp(-sum p log p) of p = weights / sum(weights); 0 for an all-zero vector."""
    total = weights.sum()
    if total <= 0:
        return 0.0
    p = weights / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def singular_values(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Singular values of B @ A from the QR factors of B and A^T (r x r core only)."""
    _, Rb = torch.linalg.qr(B)
    _, Ra = torch.linalg.qr(A.T)
    return torch.linalg.svdvals(Rb @ Ra.T)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


@torch.no_grad()
def rank_energy(state: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """{group: {"energy": [per rank block j], "effective_rank": float, "block_effective_rank": float}}
    (see the module docstring); groups in order of first appearance."""
    energy: dict[str, torch.Tensor] = {}
    eff: dict[str, list[float]] = {}
    for a, b in lora_pairs(state):
        A, B = state[a].detach().cpu().double(), state[b].detach().cpu().double()
        group = module_group(a)
        e = B.square().sum(dim=0) * A.square().sum(dim=1)
        if group in energy and energy[group].shape == e.shape:
            energy[group] += e
        else:
            energy[group] = e.clone()
        eff.setdefault(group, []).append(exp_entropy(singular_values(B, A)))
    return {
        g: {
            "energy": [_round(x) for x in energy[g].tolist()],
            "effective_rank": _round(sum(eff[g]) / len(eff[g])),
            "block_effective_rank": _round(exp_entropy(energy[g])),
        }
        for g in energy
    }


def live_rank(state: Mapping[str, torch.Tensor]) -> int:
    """How many leading rank slices of the adapter can still train: 1 + the last slice j with a nonzero A[j, :]
    or B[:, j] in some LoRA pair; 0 for none (or no LoRA pair). A slice with A[j] = 0 and B[:, j] = 0 gets no
    gradient (each factor's gradient is through the other), so it stays zero for the rest of a run. `fedavg`
    and `hetlora` average zero-padded factors, so a round in which no client trains slice j leaves it there."""
    alive = 0
    for a, b in lora_pairs(state):
        A, B = state[a], state[b]
        used = (A.abs().sum(dim=1) > 0) | (B.abs().sum(dim=0) > 0)
        nonzero = torch.nonzero(used).flatten()
        if len(nonzero):
            alive = max(alive, int(nonzero[-1]) + 1)
    return alive
