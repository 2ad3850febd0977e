"""The round loop on the tiny random model: results files, reproducibility, deadlines, memory caps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedranklite.core.results_io import RoundLog
from fedranklite.run.engine import build_engine, select_clients
from fedranklite.run.runners import DeadlineGate, client_seed


def run(cfg):
    engine = build_engine(cfg)
    summary = engine.run()
    return engine, summary


def test_run_writes_every_result_file_and_metric(tiny_config):
    cfg = tiny_config()
    engine, summary = run(cfg)
    out = cfg.results_dir
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["rounds_completed"] == 2 == len(RoundLog.read(out / "rounds.jsonl"))
    assert (out / "config.yaml").exists()
    for key in (
        "time_to_target",
        "deadline_compliance_pct",
        "fairness_final",
        "bytes",
        "peak_memory_mb",
        "final_score",
        "rounds",
        "sim_time_total",
    ):
        assert key in on_disk, key
    rec = RoundLog.read(out / "rounds.jsonl")[0]
    assert len(rec.clients.rows()) == 3 and set(rec.fairness) == {"p10", "p50", "p90"}
    for c in rec.clients.rows():
        # bytes are those of the real tensors: rank-r LoRA factors + head, float32
        assert c.bytes_up == engine.fed.bytes_fixed + c.rank * engine.fed.bytes_per_rank
        assert c.bytes_down == c.bytes_up
        assert c.peak_memory_mb > 0
    assert sum(rec.ranks.values()) == round(4 * 3)  # lite hands out exactly r_bar * selected
    assert 0.0 <= summary.final_score <= 1.0


def test_same_seed_same_ranks_and_same_adapter(tiny_config):
    a, _ = run(tiny_config(experiment_name="a"))
    b, _ = run(tiny_config(experiment_name="b"))
    assert [r.ranks for r in a.state.records] == [r.ranks for r in b.state.records]
    for name, t in a.state.global_state.items():
        assert torch.equal(t, b.state.global_state[name]), name
    c, _ = run(tiny_config(experiment_name="c", seed=1))
    assert any(not torch.equal(t, c.state.global_state[n]) for n, t in a.state.global_state.items())


def test_analytic_time_is_deterministic_and_matches_formula(tiny_config):
    cfg = tiny_config(deadline={"seconds": None})
    engine, _ = run(cfg)
    rec = engine.state.records[0]
    for c in rec.clients.rows():
        tier = cfg.tiers[c.tier]
        compute = c.samples * (0.05 + 0.01 * c.rank) / tier.compute_factor
        comm = (c.bytes_up + c.bytes_down) * 8 / (tier.bandwidth_mbps * 1e6)
        assert c.sim_seconds == pytest.approx(compute + comm)
    assert rec.round_sim_seconds == pytest.approx(max(c.sim_seconds for c in rec.clients.rows()))


# A deadline that a slow-tier (0.25x) client cannot meet with 3 full steps of 8 samples:
# slow: 24 * (0.05 + 0.01 r) / 0.25 >= 24 * 0.06 / 0.25 = 5.76 s; fast: 24 * 0.13 = 3.1 s at rank 8.
DEADLINE = 4.0


def all_clients_every_round(tiny_config, policy):
    return tiny_config(
        federation={"clients_per_round": 4, "num_rounds": 1}, deadline={"seconds": DEADLINE, "straggler_policy": policy}
    )


def test_drop_discards_late_updates_and_round_ends_at_deadline(tiny_config):
    engine, summary = run(all_clients_every_round(tiny_config, "drop"))
    rec = engine.state.records[0]
    slow = [c for c in rec.clients.rows() if c.tier == "slow"]
    fast = [c for c in rec.clients.rows() if c.tier == "fast"]
    assert slow and all(c.straggler and c.status == "dropped" for c in slow)
    assert all(c.status == "accepted" and not c.straggler for c in fast)
    assert rec.round_sim_seconds == pytest.approx(DEADLINE)
    assert not rec.compliant and summary.deadline_compliance_pct == 0.0


def test_wait_accepts_everyone_and_lasts_as_long_as_the_slowest(tiny_config):
    engine, _ = run(all_clients_every_round(tiny_config, "wait"))
    rec = engine.state.records[0]
    assert all(c.status == "accepted" and c.steps == c.planned_steps for c in rec.clients.rows())
    assert rec.round_sim_seconds == pytest.approx(max(c.sim_seconds for c in rec.clients.rows()))
    assert rec.round_sim_seconds > DEADLINE
    assert sorted(rec.stragglers) == [c.cid for c in rec.clients.rows() if c.tier == "slow"]


def test_use_partial_keeps_the_steps_that_fit(tiny_config):
    engine, _ = run(all_clients_every_round(tiny_config, "use_partial"))
    rec = engine.state.records[0]
    for c in rec.clients.rows():
        assert c.sim_seconds <= DEADLINE + 1e-9
        if c.tier == "slow":
            assert c.straggler and c.status == "partial" and 0 < c.steps < c.planned_steps
            # exactly the steps that fit: comm + steps * 8 * (0.05 + 0.01 r) / 0.25 <= deadline < one more
            per_step = 8 * (0.05 + 0.01 * c.rank) / 0.25
            comm = (c.bytes_up + c.bytes_down) * 8 / 10e6
            assert comm + c.steps * per_step <= DEADLINE < comm + (c.steps + 1) * per_step
    assert rec.round_sim_seconds <= DEADLINE


def test_tier_memory_caps_rank_and_reports_clients_that_cannot_train(tiny_config):
    # 'slow' has memory for nothing; 'fast' is capped at a low rank by the memory model
    engine = build_engine(
        tiny_config(federation={"clients_per_round": 4, "num_rounds": 1}, tiers={"slow": {"memory_gb": 1e-6}})
    )
    prof = engine.model.memory_profile()
    cap = engine.fed.max_rank[0]
    assert cap == prof.max_rank(8, 8, 8, 32)
    tight = (prof.bytes_at(2, 8, 32) + 1) / 1024**3
    engine = build_engine(
        tiny_config(
            federation={"clients_per_round": 4, "num_rounds": 1, "scheduler": {"type": "fixed", "rank": 6}},
            tiers={"slow": {"memory_gb": 1e-6}, "fast": {"memory_gb": tight}},
        )
    )
    summary = engine.run()
    rec = engine.state.records[0]
    assert sorted(rec.out_of_memory) == [2, 3]
    assert [c.cid for c in rec.clients.rows()] == [0, 1]
    assert all(c.rank == 2 for c in rec.clients.rows())  # fixed rank 6 capped to the memory's 2
    assert summary.run["tier_rank_caps"] == {"fast": 2, "slow": 0}


def test_stop_at_target_ends_early(tiny_config):
    engine, summary = run(tiny_config(federation={"num_rounds": 4}, evaluation={"target": 0.0, "stop_at_target": True}))
    assert summary.rounds_completed == 1
    assert (summary.time_to_target.round, summary.time_to_target.sim_seconds) == (1, engine.state.records[0].sim_time)


@pytest.mark.parametrize("scheduler", ["fixed", "cvx", "lite"])
@pytest.mark.parametrize("aggregation", ["fedavg", "blockwise"])
def test_every_scheduler_and_aggregator_runs(tiny_config, scheduler, aggregation):
    cfg = tiny_config(federation={"aggregation": aggregation, "scheduler": {"type": scheduler}, "num_rounds": 1})
    engine, summary = run(cfg)
    ranks = list(engine.state.records[0].ranks.values())
    assert all(1 <= r <= 8 for r in ranks)
    if scheduler != "fixed":
        assert sum(ranks) == 12
    assert summary.rounds_completed == 1


def test_regression_task_runs_with_pearson(tiny_config, tmp_path):
    rows = ["sentence1\tsentence2\tscore"]
    rng = np.random.default_rng(0)
    for i in range(80):
        s = float(rng.uniform(0, 5))
        rows.append(f"the movie was great {i}\tthis film was {'great' if s > 2.5 else 'awful'}\t{s:.2f}")
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(rows) + "\n")
    cfg = tiny_config(
        data={
            "source": "files",
            "train_file": str(path),
            "text_columns": ["sentence1", "sentence2"],
            "label_column": "score",
            "task": "regression",
            "partition": {"type": "dirichlet"},
        },
        federation={"num_rounds": 1},
    )
    engine, summary = run(cfg)
    assert summary.metric == "pearson"
    assert engine.model.num_labels == 1
    assert {"pearson", "spearman", "mse"} <= set(summary.run["final_eval"])


def test_selection_and_client_seeds_are_reproducible():
    a = select_clients(0, 3, 10, 5)
    assert np.array_equal(a, select_clients(0, 3, 10, 5)) and len(set(a.tolist())) == 5
    assert not all(np.array_equal(select_clients(0, r, 10, 5), a) for r in range(1, 6))
    assert client_seed(0, 1, 2) == client_seed(0, 1, 2) != client_seed(0, 1, 3)


def test_deadline_gate_analytic_and_measured():
    gate = DeadlineGate(deadline=10.0, comm_seconds=1.0, compute_factor=0.5, mode="analytic", sec_per_step=3.0)
    assert gate(0, 0.0) and gate(2, 0.0) and not gate(3, 0.0)  # 1 + 3*3 = 10 fits, 1 + 4*3 = 13 does not
    measured = DeadlineGate(deadline=10.0, comm_seconds=1.0, compute_factor=0.5, mode="measured")
    assert measured(0, 0.0)  # always try a first step
    assert measured(2, 2.0)  # (2 + 1) / 0.5 + 1 = 7 <= 10
    assert not measured(2, 4.0)  # (4 + 2) / 0.5 + 1 = 13 > 10


def test_predicted_time_counts_every_local_epoch(tiny_config):
    """The scheduler's prediction for a client that trains 2 local epochs is the time of both epochs: in a
    deterministic time mode it equals the simulated time the client then spends (it was one epoch's)."""
    cfg = tiny_config(
        training={"local_epochs": 2, "max_local_steps": None, "batch_size": 8, "probe_samples": 0},
        federation={"num_rounds": 1, "scheduler": {"type": "fixed", "rank": 4, "r_min": 1, "r_bar": 4}},
    )
    engine = build_engine(cfg)
    selected = select_clients(cfg.seed, 1, engine.fed.num_clients, cfg.federation.clients_per_round)
    predicted = engine.describe(selected).predicted_time(np.full(len(selected), 4))
    engine.run()
    rec = engine.state.records[0]
    assert all(c.steps == c.planned_steps and c.samples == 2 * engine.fed.rows[c.cid] for c in rec.clients)
    assert [c.sim_seconds for c in rec.clients] == pytest.approx(predicted.tolist())
