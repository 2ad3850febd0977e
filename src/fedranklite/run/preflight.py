"""Checks of a valid config against this machine and the chosen backbone, before any model or data loads.

The schema (config.py) knows what a value may be anywhere; only here is it known whether this machine has
`device: cuda`, or whether `model.max_length` and `model.lora.r_max` fit the backbone. The backbone's limits
are read from its config.json (milliseconds), never from its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from fedranklite.config.schema import ConfigError

TINY_LIMITS = {"max_positions": 128, "hidden_size": 32}  # backbones.tiny_backbone
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "bart", "mbart"}


def device_problem(name: str) -> Optional[str]:
    """Why `device` cannot be used on this machine (None when it can)."""
    import torch

    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "'mps' asked for, but this machine has no MPS"
    if not name.startswith("cuda"):
        return None

    if not torch.cuda.is_available():
        return f"{name!r} asked for, but this machine has no usable CUDA device (use auto or cpu)"
    if ":" in name and int(name.split(":", 1)[1]) >= torch.cuda.device_count():
        return f"{name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def _model_json(cfg) -> Optional[dict]:
    """The backbone's config.json when it can be read without loading or converting anything."""
    name = cfg.model.name
    if name.startswith("tiny:"):
        return dict(TINY_LIMITS)
    folder: Optional[Path] = None
    if name == "bundled:minilm-l6":
        from fedranklite.model.backbones import ModelError, bundled_path

        try:
            folder = bundled_path(name)
        except ModelError:
            return None  # the model loader says what is missing, in its own words
    elif not name.startswith("bundled:"):
        folder = Path(name).expanduser()
    if folder is None or not (folder / "config.json").is_file():
        return None  # a Hub name, or a GGUF not yet converted: checked when it loads
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None  # not a model config: the loader says so in its own words
    positions = raw.get("max_position_embeddings") or raw.get("n_positions")
    if isinstance(positions, int) and raw.get("model_type") in OFFSET_POSITIONS:
        positions -= 2  # RoBERTa-style: two position ids are reserved for padding
    if raw.get("model_type", "").startswith("deberta") and not raw.get("position_biased_input", True):
        positions = None  # relative positions only: no hard limit on the length
    return {
        "max_positions": positions,
        "hidden_size": raw.get("hidden_size") or raw.get("n_embd") or raw.get("d_model"),
    }


def model_problems(cfg) -> list[tuple[str, str]]:
    """(key, why) for settings the backbone cannot hold."""
    limits = _model_json(cfg)
    if not limits:
        return []
    problems = []
    positions, hidden = limits.get("max_positions"), limits.get("hidden_size")
    if isinstance(positions, int) and cfg.model.max_length > positions:
        problems.append(
            ("model.max_length", f"{cfg.model.max_length} is more than the {positions} positions {cfg.model.name} has")
        )
    if isinstance(hidden, int) and cfg.model.lora.r_max > hidden:
        problems.append(
            (
                "model.lora.r_max",
                f"{cfg.model.lora.r_max} is more than {cfg.model.name}'s hidden size {hidden}; a LoRA rank above "
                "a layer's width adds nothing",
            )
        )
    return problems


def check(cfg, origin: str = "<config>") -> None:
    """Raise ConfigError (one line per problem, naming `origin`: the experiment file) when this machine or
    the backbone cannot run `cfg`. The surrogate backend loads no model and uses no device: nothing to check."""
    if cfg.engine.backend == "surrogate":
        return
    problems = model_problems(cfg)
    device = device_problem(cfg.device)
    if device:
        problems.insert(0, ("device", device))
    if problems:
        raise ConfigError("cannot run here:\n  " + "\n  ".join(f"{origin}: {key}: {why}" for key, why in problems))
