"""Dead LoRA slices: `live_rank` finds the slices that can still train, and a run whose zero-padding aggregator
killed slices it later assigns says so (a log line once, a warning in metrics.json); blockwise keeps them."""

from __future__ import annotations

import logging

import torch

from fedranklite.federation.diagnostics import live_rank
from fedranklite.run.engine import build_engine


def _state(A_rows_alive: int, B_cols_alive: int, r_max: int = 6) -> dict:
    A = torch.zeros(r_max, 5)
    B = torch.zeros(4, r_max)
    A[:A_rows_alive] = 1.0
    B[:, :B_cols_alive] = 1.0
    return {
        "layer.0.query.lora_A.default.weight": A,
        "layer.0.query.lora_B.default.weight": B,
        "head.weight": torch.ones(2, 3),
    }


def test_a_slice_is_alive_while_either_factor_is_nonzero_there():
    assert live_rank(_state(6, 0)) == 6  # fresh LoRA: B = 0, A random -> every slice can train
    assert live_rank(_state(3, 2)) == 3
    assert live_rank(_state(0, 4)) == 4
    assert live_rank(_state(0, 0)) == 0
    two = {
        **_state(2, 2),
        "layer.1.value.lora_A.default.weight": torch.zeros(6, 5),
        "layer.1.value.lora_B.default.weight": torch.zeros(4, 6),
    }
    two["layer.1.value.lora_A.default.weight"][4] = 1.0
    assert live_rank(two) == 5  # the largest over the pairs


def _run(tiny_config, aggregation: str):
    # round 1: everyone at rank 2 (uniform with a tight deadline is not needed: fixed 2, then fixed r_max)
    cfg = tiny_config(
        federation={"num_rounds": 1, "aggregation": {"type": aggregation}, "scheduler": {"type": "fixed", "rank": 2}}
    )
    engine = build_engine(cfg)
    engine.run()
    return engine, cfg


def test_fedavg_kills_the_slices_nobody_trained_and_blockwise_keeps_them(tiny_config, caplog):
    with caplog.at_level(logging.WARNING, logger="fedranklite"):
        engine, cfg = _run(tiny_config, "fedavg")
    assert live_rank(engine.state.global_state) == 2 < cfg.r_max
    assert engine.dead_slice_warning() == []  # nobody was assigned more than the live slices
    assert not any("zero in both factors" in r.getMessage() for r in caplog.records)  # fixed: nothing lost
    kept, _ = _run(tiny_config, "blockwise")
    assert live_rank(kept.state.global_state) == cfg.r_max


def test_a_round_that_assigns_ranks_above_the_live_slices_is_said_once(tiny_config, caplog):
    engine, cfg = _run(tiny_config, "fedavg")
    with caplog.at_level(logging.WARNING, logger="fedranklite"):
        engine._warn_dead_slices(2, torch.tensor([2, 2]).numpy())  # within the live slices: nothing
        engine._warn_dead_slices(2, torch.tensor([cfg.r_max, 2]).numpy())
        engine._warn_dead_slices(3, torch.tensor([cfg.r_max, 2]).numpy())
    lines = [r.getMessage() for r in caplog.records if "zero in both factors" in r.getMessage()]
    assert len(lines) == 1 and f"ranks up to {cfg.r_max} assigned, but LoRA slices 3-{cfg.r_max}" in lines[0]


def test_the_summary_warns_when_assigned_ranks_exceed_the_live_slices(tiny_config):
    engine, cfg = _run(tiny_config, "fedavg")
    engine.state.records[-1].clients.rank[:] = cfg.r_max  # as if a later round had assigned r_max
    (line,) = engine.dead_slice_warning()
    assert f"slices 3-{cfg.r_max} zero in both factors" in line and f"ranks up to {cfg.r_max}" in line
