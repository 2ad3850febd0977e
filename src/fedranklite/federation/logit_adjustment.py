"""Logit-adjusted local training against label skew: the logit-adjusted loss of Menon et al. (ICLR 2021) applied
to each client with its own label prior (FedLC, Zhang et al., ICML 2022, calibrates logits for label skew in
federated learning with a related per-class offset; this is Menon's form, not FedLC's): a client trains on

    cross_entropy(logits + tau * log(prior), labels)

with `prior` its own label frequencies. A client that holds mostly one class fits its data through the offset
instead of pushing that class's logit up, so the head it sends back carries less of its skew; the model itself
(what the server averages and evaluates) is never offset. With a balanced prior the offset is the same for every
class and changes nothing (softmax is shift-invariant).

`training.logit_adjustment` sets tau; 0 (the default) skips the adjustment entirely, so a run without it follows
exactly the code path it followed before the option existed. Classification only: a regression task has no
label prior (run/client.py refuses the combination).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def label_log_prior(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """log((count_c + 1) / (rows + classes)) per class: the client's label frequencies, smoothed so that a class
    it lacks gets a finite offset instead of -inf (which would make that class impossible to predict in training)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    ids = np.asarray(labels, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got {int(ids.min())}..{int(ids.max())}")
    counts = np.bincount(ids, minlength=num_classes).astype(np.float64)
    return torch.as_tensor(np.log((counts + 1.0) / (ids.size + num_classes)), dtype=torch.float32)


def adjusted(logits: torch.Tensor, log_prior: torch.Tensor, tau: float) -> torch.Tensor:
    """The logits the adjusted loss sees: logits + tau * log_prior, broadcast over the batch."""
    if logits.shape[-1] != log_prior.shape[-1]:
        raise ValueError(f"{logits.shape[-1]} logits per row but a prior over {log_prior.shape[-1]} classes")
    return logits + tau * log_prior.to(device=logits.device, dtype=logits.dtype)
