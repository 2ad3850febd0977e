"""Which torch device a run uses (`device: auto | cpu | cuda | cuda:N`)."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """`auto` is the first GPU when torch sees one, else the CPU; any other name is torch's."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
