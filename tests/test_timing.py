"""timing.py: simulated client time (analytic and measured), communication time, predictions."""

from __future__ import annotations

import pytest

from fedranklite.federation.timing import TimeModel, comm_seconds


def test_comm_seconds():
    # 1,000,000 bytes = 8,000,000 bits over 8 Mbit/s -> 1 s
    assert comm_seconds(1_000_000, 8) == pytest.approx(1.0)
    # 250,000 bytes = 2e6 bits over 100 Mbit/s -> 0.02 s
    assert comm_seconds(250_000, 100) == pytest.approx(0.02)
    # 1 byte over 0.5 Mbit/s -> 8 / 5e5 = 1.6e-5 s
    assert comm_seconds(1, 0.5) == pytest.approx(1.6e-5)
    # no bandwidth (None or 0): communication is free
    assert comm_seconds(10**9, None) == 0.0
    assert comm_seconds(10**9, 0) == 0.0
    assert comm_seconds(10**9, float("nan")) == 0.0  # a per-client bandwidth the tier does not simulate
    assert comm_seconds(0, 10) == 0.0


def test_analytic_compute_seconds():
    tm = TimeModel("analytic", sec_per_sample=0.05, sec_per_sample_per_rank=0.005)
    # 100 samples * (0.05 + 0.005 * 8) / 1.0 = 100 * 0.09 = 9.0
    assert tm.compute_seconds(100, 8, 1.0) == pytest.approx(9.0)
    # slower tier: 9.0 / 0.15 = 60.0
    assert tm.compute_seconds(100, 8, 0.15) == pytest.approx(60.0)
    # rank 0: 40 * 0.05 / 0.5 = 4.0
    assert tm.compute_seconds(40, 0, 0.5) == pytest.approx(4.0)
    # a measured wall time is ignored in analytic mode (deterministic)
    assert tm.compute_seconds(100, 8, 1.0, measured_wall=123.0) == pytest.approx(9.0)


def test_measured_compute_seconds():
    tm = TimeModel("measured")
    # wall / compute_factor
    assert tm.compute_seconds(100, 8, 1.0, measured_wall=3.0) == pytest.approx(3.0)
    assert tm.compute_seconds(100, 8, 0.15, measured_wall=3.0) == pytest.approx(20.0)
    assert tm.compute_seconds(1, 16, 0.7, measured_wall=1.4) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        tm.compute_seconds(100, 8, 1.0)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        TimeModel("wallclock")


def test_predict_analytic_intercept_and_slope():
    tm = TimeModel("analytic", sec_per_sample=0.05, sec_per_sample_per_rank=0.005)
    # no bandwidth: intercept = 128 * 0.05 / 0.5 = 12.8 ; slope = 128 * 0.005 / 0.5 = 1.28
    a, b = tm.predict(128, 0.5, None, fixed_bytes=10**6, bytes_per_rank=10**5)
    assert a == pytest.approx(12.8)
    assert b == pytest.approx(1.28)
    # 10 Mbit/s: + 1e6*8/1e7 = 0.8 s on the intercept, + 1e5*8/1e7 = 0.08 s on the slope
    a, b = tm.predict(128, 0.5, 10, fixed_bytes=10**6, bytes_per_rank=10**5)
    assert a == pytest.approx(12.8 + 0.8)
    assert b == pytest.approx(1.28 + 0.08)
    # the prediction matches compute_seconds + comm_seconds at every rank
    for r in (0, 1, 4, 16):
        expected = tm.compute_seconds(128, r, 0.5) + comm_seconds(10**6 + r * 10**5, 10)
        assert a + b * r == pytest.approx(expected)


def test_predict_measured_before_and_after_observations():
    tm = TimeModel("measured", sec_per_sample=0.05, sec_per_sample_per_rank=0.005)
    # nothing observed yet: fall back to the analytic constants
    a, b = tm.predict(100, 1.0, None, 0, 0)
    assert (a, b) == (pytest.approx(5.0), pytest.approx(0.5))
    # observations: 2.0 s / 100 samples = 0.02 ; 6.0 s / 200 = 0.03 -> running mean 0.025
    tm.observe(2.0, 100)
    assert tm.observed_sec_per_sample == pytest.approx(0.02)
    tm.observe(6.0, 200)
    assert tm.observed_sec_per_sample == pytest.approx(0.025)
    # 1.2 s / 30 = 0.04 -> (0.025 * 2 + 0.04) / 3 = 0.03
    tm.observe(1.2, 30)
    assert tm.observed_sec_per_sample == pytest.approx(0.03)
    # prediction: intercept 100 * 0.03 / 0.15 = 20.0, no rank dependence measured -> slope 0 (+comm)
    a, b = tm.predict(100, 0.15, None, 0, 0)
    assert a == pytest.approx(20.0)
    assert b == 0.0
    a, b = tm.predict(100, 0.15, 50, fixed_bytes=500_000, bytes_per_rank=25_000)
    # comm: 500,000*8/5e7 = 0.08 ; 25,000*8/5e7 = 0.004
    assert a == pytest.approx(20.08)
    assert b == pytest.approx(0.004)


def test_observe_ignores_degenerate_and_analytic():
    tm = TimeModel("measured")
    tm.observe(0.0, 100)
    tm.observe(1.0, 0)
    tm.observe(-1.0, 10)
    assert tm.observed_sec_per_sample is None
    an = TimeModel("analytic")
    an.observe(2.0, 100)
    assert an.observed_sec_per_sample is None


def test_state_dict_round_trip():
    tm = TimeModel("measured")
    tm.observe(2.0, 100)
    tm.observe(6.0, 200)
    fresh = TimeModel("measured")
    fresh.load_state_dict(tm.state_dict())
    assert fresh.observed_sec_per_sample == pytest.approx(0.025)
    # the running mean continues with the right count: (0.025 * 2 + 0.04) / 3 = 0.03
    fresh.observe(0.4, 10)
    assert fresh.observed_sec_per_sample == pytest.approx(0.03)


def test_measured_timing_says_once_that_it_does_not_convert_to_the_tiers_reference(tiny_config, caplog):
    import logging

    from fedranklite.federation import timing

    timing._warned.clear()
    plain = tiny_config(timing={"mode": "measured"})
    named = tiny_config(timing={"mode": "measured"}, tiers={"fast": {"compute_reference": "NVIDIA H100"}})
    with caplog.at_level(logging.WARNING, logger="fedranklite.federation.timing"):
        TimeModel.from_config(plain.timing, plain)
        assert not caplog.records  # no reference named: nothing is left unconverted
        TimeModel.from_config(named.timing, named)
        TimeModel.from_config(named.timing, named)
        analytic = tiny_config(tiers={"fast": {"compute_reference": "NVIDIA H100"}})
        TimeModel.from_config(analytic.timing, analytic)  # analytic constants are on the reference by definition
    assert len(caplog.records) == 1 and "'NVIDIA H100' is not applied" in caplog.records[0].getMessage()
