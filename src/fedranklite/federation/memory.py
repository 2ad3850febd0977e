"""The memory model of a client: how many bytes training at LoRA rank r needs, and so the largest rank
a tier's memory allows (the scheduler never assigns more). FedModel.memory_profile() measures one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryProfile:
    """A simple memory model of one client training at rank r (used to check tier memory):
    frozen weights + trainable weights, gradients and two Adam moments (16 bytes per fp32 parameter)
    + activations (~`act_factor` fp32 values per token, hidden unit and layer)."""

    frozen_bytes: int
    lora_params_per_rank: int
    head_params: int
    hidden_size: int
    num_layers: int
    act_factor: float = 12.0

    def bytes_at(self, rank: int, batch_size: int, seq_len: int) -> float:
        trainable = self.lora_params_per_rank * rank + self.head_params
        activations = self.act_factor * batch_size * seq_len * self.hidden_size * self.num_layers * 4
        return float(self.frozen_bytes + 16 * trainable + activations)

    def max_rank(self, memory_gb: float, r_max: int, batch_size: int, seq_len: int) -> int:
        """Largest rank in [0, r_max] that fits in `memory_gb` (0: not even rank 1 fits)."""
        budget = memory_gb * 1024**3
        fixed = self.bytes_at(0, batch_size, seq_len)
        if fixed + 16 * self.lora_params_per_rank > budget:
            return 0
        per_rank = 16 * max(self.lora_params_per_rank, 1)
        return int(min(r_max, (budget - fixed) // per_rank))
