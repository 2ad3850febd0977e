"""Shared fixtures: a tiny random-init model config that trains in well under a second per round; and the
`slow` marker: `python -m pytest -m "not slow"` leaves out the tests that start processes (the command line,
benchmark scripts, a busy loop), run Flower, or load a real (non-tiny) model."""

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


def local_client(tiny_config, **training):
    """(engine, prepared, train) for one client's local training on the tiny random model: `train(settings,
    rows=None)` trains client 0 at rank 4 from the engine's global adapter with a fixed seed (its own rows
    unless `rows` is given), so two calls with equal settings compute the same thing."""
    from fedranklite.run.client import train_client
    from fedranklite.run.engine import build_engine

    engine = build_engine(tiny_config(training=training))
    prep = engine.prepared

    def train(settings, rows=None):
        rows = prep.partitions[0] if rows is None else rows
        return train_client(
            engine.model, engine.state.global_state, 0, 4, prep.train, rows, settings, prep.device, seed=1234
        )

    return engine, prep, train


def assert_same_training(reference, again) -> None:
    """Two client results are the same: every update tensor bit for bit and the reported losses."""
    for name, tensor in reference.update.items():
        assert torch.equal(tensor, again.update[name]), name
    assert (again.loss_before, again.loss_after, again.loss_rms) == (
        reference.loss_before,
        reference.loss_after,
        reference.loss_rms,
    )


# The tiny model gains nothing from threads, and two cores shared with other processes thrash.
import torch  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- the slow marker
# Every test of these modules starts processes, runs Flower or loads a real model.
SLOW_MODULES = {
    "test_cli.py",  # the command line in a subprocess
    "test_e2e_bundled.py",  # the bundled MiniLM backbone end to end
    "test_flower.py",  # Flower simulation and deployment
    "test_flower_auth.py",  # Flower's TLS and node authentication
    "test_resume.py",  # killed and resumed command-line runs
    "test_smollm2.py",  # the bundled SmolLM2-135M backbone
    "test_sweep.py",  # sweeps start their runs as subprocesses
    "test_sweep_slurm.py",  # sweeps through submitit's local executor and the command line
}
# Single tests of otherwise fast modules ("module::test function", every parametrization).
SLOW_TESTS = {
    "test_bench_glue_curves.py::test_backfill_cli_refuses_a_file_that_is_not_results",
    "test_bench_glue_merge.py::test_merge_cli_writes_json_and_md_and_refuses_bad_copies",
    "test_bench_glue_quant.py::test_a_damaged_results_file_stops_a_resume_in_one_line",
    "test_bench_glue_quant.py::test_a_mistyped_rerun_name_is_one_clear_error_before_any_work",
    "test_bench_slm_budget.py::test_continue_from_must_be_fewer_rounds_than_the_candidate",
    "test_config.py::test_config_loading_imports_no_model_or_data_library",
    "test_glue.py::test_tiny_glue_run_end_to_end",
    "test_prepare.py::test_local_engine_and_flower_client_side_get_identical_partitions_tokens_and_model",
    "test_profile.py::test_profile_command_rejects_bad_ranks_in_one_line",
    "test_profile.py::test_profile_time_does_not_depend_on_machine_load",
    "test_profile.py::test_a_file_that_is_not_a_profile_is_one_line_at_run_time",
    "test_quant.py::test_qlora_trains_fp32_adapters_on_a_quantized_base",
    "test_quant.py::test_a_4bit_layer_computes_exactly_its_dequantized_weights_forward_and_backward",
    "test_results_folder.py::test_a_crafted_pickle_never_runs_through_the_command_line",
    "test_run_output.py::test_version_prints_the_package_version",
    "test_run_output.py::test_the_terminal_at_80_columns_keeps_every_rounds_line",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: starts processes, runs Flower or loads a real (non-tiny) model; leave out with -m 'not slow'",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        name = f"{module}::{getattr(item, 'originalname', item.name)}"
        if module in SLOW_MODULES or name in SLOW_TESTS or item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.slow)
