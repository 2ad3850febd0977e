"""Shared fixtures: a tiny random-init model config that trains in well under a second per round."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_tree(tmp_path, **sections) -> dict:
    """A complete config tree on the tiny random backbone and a small embedded dataset."""
    tree = {
        "experiment_name": "tiny",
        "seed": 0,
        "output_dir": str(tmp_path / "results"),
        "device": "cpu",
        "model": {
            "name": "tiny:bert",
            "max_length": 32,
            "lora": {"r_max": 8, "alpha": 16, "target_modules": ["query", "value"]},
        },
        "federation": {
            "num_rounds": 2,
            "clients_per_round": 3,
            "aggregation": "blockwise",
            "scheduler": {"type": "lite", "r_min": 1, "r_bar": 4},
        },
        "training": {"max_local_steps": 3, "batch_size": 8, "lr": 0.005, "probe_samples": 16},
        "data": {"source": "embedded", "name": "sentiment", "embedded_train_size": 240, "embedded_eval_size": 64},
        "tiers": {
            "fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "bandwidth_mbps": 100},
            "slow": {"compute_factor": 0.25, "num_clients": 2, "memory_gb": 8, "bandwidth_mbps": 10},
        },
        "timing": {"mode": "analytic", "sec_per_sample": 0.05, "sec_per_sample_per_rank": 0.01},
        "evaluation": {"eval_every": 1, "max_samples": 64, "target": 0.6},
    }
    from fedranklite.config.files import deep_merge

    return deep_merge(tree, sections)


@pytest.fixture
def tiny_config(tmp_path):
    from fedranklite.config.files import validate

    def make(**sections):
        return validate(tiny_tree(tmp_path, **sections))

    return make


# The tiny model gains nothing from threads, and two cores shared with other processes thrash.
import torch  # noqa: E402

torch.set_num_threads(1)
