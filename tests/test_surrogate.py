"""What-if surrogate: the fits recover known parameters, calibration on a real (tiny) run, the surrogate engine
runs the same schedulers/policies/metrics, matches the real run's ranks/times/compliance at N = 10 where
those do not depend on the model, and scales to many clients with compact records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import tiny_tree

from fedranklite.backends.surrogate.engine import (
    STATE_KEY,
    CalibrationError,
    SurrogateFit,
    build_surrogate_engine,
    calibrate,
    fit_drops,
    fit_progress,
    fit_time,
)
from fedranklite.config.files import validate
from fedranklite.config.schema import ConfigError
from fedranklite.run.client import samples_in_steps
from fedranklite.run.engine import build_engine


def test_fit_time_recovers_a_linear_cost_exactly():
    ranks = [1, 2, 4, 8, 8, 3]
    y = [0.05 + 0.01 * r for r in ranks]
    a, b, r2 = fit_time(ranks, y)
    assert a == pytest.approx(0.05) and b == pytest.approx(0.01) and r2 == pytest.approx(1.0)
    a, b, _ = fit_time([4, 4], [0.2, 0.3])  # no rank variation: a constant, no slope
    assert (a, b) == (pytest.approx(0.25), 0.0)


def test_fit_progress_recovers_start_limit_and_rate_from_a_generated_trajectory():
    s0, s_lim, k = 0.55, 0.9, 0.3
    effs = [
        np.array([1.0, 0.5, 0.25]),
        np.array([1.0, 1.0, 0.5]),
        np.array([0.5, 0.5, 0.5]),
        np.array([1.0, 0.25, 0.25]),
        np.array([0.75, 0.75, 1.0]),
        np.array([1.0, 1.0, 1.0]),
    ]
    weights = [np.array([1.0, 2.0, 1.0])] * len(effs)
    scores, gap = [], s_lim - s0
    for e, w in zip(effs, weights):
        gap *= float(np.average(1 - k * e, weights=w))
        scores.append(s_lim - gap)
    scores[2] = None  # a round without an evaluation is simulated through, not scored
    got_s0, got_lim, got_k, rmse = fit_progress(scores, effs, weights, (0.0, 1.0))
    assert rmse < 5e-3 and got_k == pytest.approx(k, abs=0.06)
    assert got_s0 == pytest.approx(s0, abs=0.03) and got_lim == pytest.approx(s_lim, abs=0.03)
    # lower-is-better metrics fall towards S*
    mse = [None if x is None else 1.5 - x for x in scores]
    _, lim, _, rmse = fit_progress(mse, effs, weights, (0.0, math.inf), higher_is_better=False)
    assert rmse < 5e-3 and lim == pytest.approx(1.5 - s_lim, abs=0.05)


def test_fit_drops_recovers_phi_and_beta():
    rng = np.random.default_rng(0)
    q = rng.uniform(0.1, 1.0, 200)
    e = rng.uniform(0.2, 0.6, 200)
    f = rng.uniform(0.5, 1.0, 200)
    d = 0.2 * e * q**0.7 * f * np.exp(0.05 * rng.standard_normal(200))
    phi, beta, sigma, n = fit_drops(d, e, q, f)
    assert n == 200 and beta == pytest.approx(0.7, abs=0.05) and phi == pytest.approx(0.2, rel=0.05)
    assert sigma == pytest.approx(0.05, abs=0.02)


def test_samples_in_steps_counts_short_last_batches_and_epochs():
    assert samples_in_steps(3, 40, 16, 1) == 40  # 16 + 16 + 8
    assert samples_in_steps(2, 40, 16, 1) == 32
    assert samples_in_steps(4, 40, 16, 2) == 40 + 16
    assert samples_in_steps(0, 40, 16, 1) == 0


def _real_run(tmp_path, **sections):
    tree = tiny_tree(
        tmp_path,
        **{
            "federation": {"num_rounds": 4, "clients_per_round": 4},
            "deadline": {"seconds": 8.0, "straggler_policy": "use_partial"},
            "data": {"samples_per_client": 40},
            **sections,
        },
    )
    cfg = validate(tree)
    engine = build_engine(cfg)
    engine.run()
    return cfg, engine


def test_calibrate_a_real_run_and_replay_it_with_the_surrogate(tmp_path):
    cfg, real = _real_run(
        tmp_path, federation={"num_rounds": 4, "clients_per_round": 4, "scheduler": {"type": "cvx", "solver": "greedy"}}
    )
    fit = calibrate(cfg.results_dir)
    # analytic timing: the time fit is the configured model, exactly
    assert fit.sec_per_sample == pytest.approx(0.05, rel=1e-6)
    assert fit.sec_per_sample_per_rank == pytest.approx(0.01, rel=1e-6)
    assert fit.source["time_r2"] == pytest.approx(1.0)
    assert 0 <= fit.score_start <= 1 and 0 <= fit.score_limit <= 1 and 0 <= fit.rate <= 1
    path = fit.save(tmp_path / "fit.json")
    assert SurrogateFit.load(path) == fit

    tree = cfg.to_dict()
    tree["engine"]["backend"] = "surrogate"
    tree["engine"]["surrogate"] = {"calibration": str(path)}
    tree["experiment_name"] = "tiny_surrogate"
    sur = build_surrogate_engine(validate(tree))
    summary = sur.run()
    # cvx ranks depend only on the time model and tiers, which the surrogate reproduces exactly: so do the
    # ranks, per-client simulated times, steps (deadline), compliance and bytes of every round
    for a, b in zip(real.state.records, sur.state.records):
        assert a.ranks == b.ranks
        assert [c.steps for c in a.clients.rows()] == [c.steps for c in b.clients.rows()]
        assert [c.sim_seconds for c in a.clients.rows()] == pytest.approx([c.sim_seconds for c in b.clients.rows()])
        assert [c.bytes_up for c in a.clients.rows()] == [c.bytes_up for c in b.clients.rows()]
        assert a.compliant == b.compliant and a.stragglers == b.stragglers
    assert summary.deadline_compliance_pct == real.summary().deadline_compliance_pct
    # the global "adapter" is the surrogate's score gap; every round evaluates its score
    assert set(sur.state.global_state) == {STATE_KEY}
    scores = [r.score for r in sur.state.records]
    assert all(s is not None and 0 <= s <= 1 for s in scores)
    written = json.loads((sur.cfg.results_dir / "metrics.json").read_text())
    assert written["surrogate"]["rate"] == pytest.approx(fit.rate)


def test_surrogate_at_scale_with_compact_records(tmp_path):
    cfg, _ = _real_run(tmp_path)
    fit_path = calibrate(cfg.results_dir).save(tmp_path / "fit.json")
    tree = tiny_tree(
        tmp_path,
        **{
            "experiment_name": "scale",
            "federation": {"num_rounds": 5, "clients_per_round": 500, "scheduler": {"type": "lite", "r_bar": 4}},
            "tiers": {"fast": {"num_clients": 1000}, "slow": {"num_clients": 1000}},
            "deadline": {"seconds": 8.0, "straggler_policy": "drop"},
            "engine": {"backend": "surrogate", "surrogate": {"calibration": str(fit_path), "rows_per_client": 40}},
            "metrics": {"client_records": "columns", "checkpoint": False, "summary_every": 5},
        },
    )
    engine = build_surrogate_engine(validate(tree))
    summary = engine.run()
    assert summary.rounds_completed == 5 and engine.fed.num_clients == 2000
    for rec in engine.state.records:
        cols = rec.clients
        assert len(cols.cid) == 500 and int(np.sum(cols.rank)) == 4 * 500  # lite: exact budget
    # slow clients miss the 8 s deadline at high rank and are dropped: client compliance is partial
    assert 0 < summary.client_compliance_pct < 100
    assert summary.bytes["up_per_client_per_round"] > 0 and len(summary.bytes["per_client"]) <= 2000
    lines = (engine.cfg.results_dir / "rounds.jsonl").read_text().splitlines()
    assert len(lines) == 5 and "client_columns" in json.loads(lines[0]) and "clients" not in json.loads(lines[0])
    # plots: a rank distribution per round instead of a 2,000-row heatmap
    from fedranklite.study.plots import plot_run

    names = {p.name for p in plot_run(engine.cfg.results_dir)}
    assert "ranks_distribution.png" in names and "ranks_heatmap.png" not in names


def test_surrogate_config_errors_name_the_key(tmp_path):
    tree = tiny_tree(tmp_path, engine={"backend": "surrogate"})
    with pytest.raises(ConfigError, match="engine.surrogate.calibration"):
        validate(tree)
    tree = tiny_tree(tmp_path, engine={"backend": "surrogate", "surrogate": {"calibration": str(tmp_path / "no.json")}})
    with pytest.raises(ConfigError, match="not found"):
        validate(tree)


def test_calibrate_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(CalibrationError, match="results folder"):
        calibrate(tmp_path)


def test_shipped_whatif_config_resolves_to_100k_clients_on_the_shipped_calibration():
    from pathlib import Path

    from fedranklite.config.files import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs" / "experiments" / "whatif_100k.yaml",
        [f"engine.surrogate.calibration={root / 'configs' / 'surrogate' / 'minilm_profile_clock.json'}"],
    )
    assert cfg.engine.backend == "surrogate" and cfg.num_clients == 100_000
    assert cfg.federation.clients_per_round == 10_000 and cfg.metrics.client_records == "columns"
    fit = SurrogateFit.load(cfg.engine.surrogate.calibration)
    assert fit.r_max == cfg.r_max and fit.rate > 0 and fit.sec_per_sample > 0


def test_surrogate_reports_the_calibrated_metric_when_the_config_names_none(tmp_path):
    cfg, _ = _real_run(tmp_path)
    fit = calibrate(cfg.results_dir)
    fit.metric = "f1"  # e.g. a calibration on MRPC; the what-if config leaves evaluation.metric unset
    path = fit.save(tmp_path / "fit_f1.json")
    tree = tiny_tree(
        tmp_path, experiment_name="f1_whatif", engine={"backend": "surrogate", "surrogate": {"calibration": str(path)}}
    )
    assert validate(tree).evaluation.metric is None
    engine = build_surrogate_engine(validate(tree))
    summary = engine.run()
    assert engine.metric == "f1" and summary.metric == "f1"
    assert all(r.eval["f1"] == r.score for r in engine.state.records)


def test_surrogate_rank_caps_follow_each_clients_tier(tmp_path):
    """The per-client rank caps (built per tier, not per client) put each client under its own tier's memory:
    the tier in the middle fits no rank, so its clients are out of memory and never train."""
    from pathlib import Path

    from fedranklite.config.files import load_config
    from fedranklite.federation.memory import MemoryProfile
    from fedranklite.run.prepare import tier_rank_caps

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs" / "experiments" / "lite_noniid_deadline.yaml",
        [
            f"output_dir={tmp_path}",
            "engine.backend=surrogate",
            f"engine.surrogate.calibration={root / 'configs' / 'surrogate' / 'minilm_profile_clock.json'}",
            "engine.surrogate.rows_per_client=50",
            "tiers.gpu_fast.num_clients=30",
            "tiers.gpu_medium.num_clients=20",
            "tiers.gpu_medium.memory_gb=0.1",
            "tiers.cpu_slow.num_clients=50",
            "federation.clients_per_round=40",
            "federation.num_rounds=2",
            "metrics.checkpoint=false",
        ],
    )
    engine = build_surrogate_engine(cfg)
    profile = MemoryProfile(**SurrogateFit.load(cfg.engine.surrogate.calibration).memory_profile)
    caps = tier_rank_caps(engine.cfg, profile)
    expected = np.array([caps[t] for t in engine.cfg.client_tiers()])
    assert caps["gpu_medium"] == 0 < caps["gpu_fast"] and caps["cpu_slow"] > 0  # the check can tell tiers apart
    assert np.array_equal(engine.fed.max_rank, expected)
    engine.run()
    medium = set(range(30, 50))
    for rec in engine.state.records:
        assert set(rec.out_of_memory) == medium & set(rec.selected)
        assert not medium & {int(c) for c in rec.clients.cid}


def test_calibration_subtracts_each_direction_at_its_own_link(tmp_path):
    """Tiers that give uplink and downlink separately (no bandwidth_mbps): the time fit still recovers the
    configured analytic model exactly, because each direction's bytes are priced at that direction's link."""
    tiers = {
        "fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "uplink_mbps": 0.5, "downlink_mbps": 50},
        "slow": {"compute_factor": 0.25, "num_clients": 2, "memory_gb": 8, "uplink_mbps": 5, "downlink_mbps": 20},
    }
    cfg, _ = _real_run(tmp_path, tiers=tiers, deadline={"seconds": None, "straggler_policy": "wait"})
    fit = calibrate(cfg.results_dir)
    assert fit.sec_per_sample == pytest.approx(0.05, rel=1e-6)
    assert fit.sec_per_sample_per_rank == pytest.approx(0.01, rel=1e-6)
