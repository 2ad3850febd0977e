"""Schedulers: fixed, cvx (cvxpy and its greedy fallback) and lite, plus the shared integer helpers.

Expected ranks are worked out by hand from the formulas in the module docstrings; the arithmetic is
written next to each number. No timing: lite's O(N) is checked structurally (the number of
correction passes does not grow with N); speed is measured by benchmarks/bench_schedulers.py.
"""

from __future__ import annotations

import itertools
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from fedranklite.federation.schedulers import (
    SCHEDULERS,
    Clients,
    Reports,
    build_scheduler,
    feasible_budget,
    greedy_min_max,
    rank_budget,
    repair_to_budget,
    repair_with_passes,
)
from fedranklite.federation.schedulers import cvx as cvx_mod
from fedranklite.federation.schedulers import lite as lite_mod
from fedranklite.federation.schedulers.cvx import CvxScheduler
from fedranklite.federation.schedulers.fixed import FixedScheduler
from fedranklite.federation.schedulers.lite import LiteScheduler


def lite(**kw) -> LiteScheduler:
    params = dict(
        r_min=1,
        r_max=8,
        r_bar=4,
        ema=0.5,
        gain_weight=1.0,
        throughput_weight=0.5,
        deadline_penalty=0.5,
        normalize=False,
    )
    params.update(kw)
    return LiteScheduler(**params)


# --------------------------------------------------------------------------------------------------
# shared pieces


def test_registry_has_the_three_schedulers():
    assert set(SCHEDULERS) >= {"fixed", "cvx", "lite"}
    with pytest.raises(KeyError, match="unknown scheduler"):
        SCHEDULERS["random"]


def test_clients_and_reports_broadcast_scalars():
    c = Clients.of([3, 1, 2], max_rank=4, compute_factor=0.5, time_intercept=[1.0, 2.0, 3.0], time_per_rank=0.5)
    assert len(c) == 3
    assert c.max_rank.tolist() == [4, 4, 4] and c.compute_factor.tolist() == [0.5] * 3
    # t(r) = intercept + slope * r
    assert c.predicted_time(np.array([2, 4, 0])).tolist() == [2.0, 4.0, 3.0]
    r = Reports.of([0, 1], rank=4, loss_drop=[0.1, 0.2], throughput=5.0)
    assert len(r) == 2 and r.rank.tolist() == [4, 4] and r.missed_deadline.tolist() == [False, False]
    assert r.throughput.tolist() == [5.0, 5.0]


def test_rank_budget_and_feasible_budget():
    assert rank_budget(8, 5) == 40
    assert rank_budget(2.5, 3) == 8  # 7.5 -> 8
    assert rank_budget(10 / 3, 3) == 10
    lo, hi = np.array([1, 1, 0]), np.array([4, 2, 0])
    assert feasible_budget(5, lo, hi) == 5
    assert feasible_budget(1, lo, hi) == 2  # at least sum(lo)
    assert feasible_budget(99, lo, hi) == 6  # at most sum(hi)


def test_bounds_with_memory_caps():
    s = FixedScheduler(r_min=2, r_max=8, r_bar=4)
    lo, hi = s.bounds(Clients.of([0, 1, 2, 3], max_rank=[16, 5, 1, 0]))
    # hi = min(r_max, cap); lo = min(r_min, hi)
    assert hi.tolist() == [8, 5, 1, 0]
    assert lo.tolist() == [2, 2, 1, 0]


def test_build_scheduler_from_config_section():
    section = SCHEDULERS.parse(
        dict(
            type="lite",
            r_min=2,
            r_bar=6.0,
            ema=0.3,
            gain_weight=2.0,
            throughput_weight=0.1,
            deadline_penalty=0.25,
            normalize=False,
        )
    )
    cfg = SimpleNamespace(
        federation=SimpleNamespace(scheduler=section), r_max=16, deadline=SimpleNamespace(seconds=None)
    )
    s = build_scheduler(cfg)
    assert isinstance(s, LiteScheduler)
    assert (s.r_min, s.r_max, s.r_bar) == (2, 16, 6.0)
    assert (s.ema, s.gain_weight, s.throughput_weight, s.deadline_penalty, s.normalize) == (0.3, 2.0, 0.1, 0.25, False)
    cfg.federation.scheduler = SCHEDULERS.parse(dict(type="cvx", r_min=1, r_bar=4.0, solver="greedy"))
    s = build_scheduler(cfg)
    assert isinstance(s, CvxScheduler) and s.solver == "greedy" and s.r_max == 16


@pytest.mark.parametrize(
    "section, message",
    [
        (dict(type="fixed", ema=0.9), "scheduler 'fixed'"),  # a lite parameter on another scheduler
        (dict(type="cvx", rank=4), "scheduler 'cvx'"),
        (dict(type="lite", solver="greedy"), "scheduler 'lite'"),
    ],
)
def test_a_scheduler_rejects_parameters_of_another(section, message):
    from fedranklite.config.files import validate
    from fedranklite.config.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(
            {
                "tiers": {"t": {"compute_factor": 1, "num_clients": 2, "memory_gb": 8}},
                "federation": {"clients_per_round": 2, "scheduler": section},
            }
        )


# --------------------------------------------------------------------------------------------------
# repair_to_budget / greedy_min_max


def test_repair_rounds_then_fills_the_shortfall_by_largest_remainder():
    # ideal [3.45, 3.35, 3.2] (sum 10) rounds to [3, 3, 3] = 9; one short -> the largest ideal - rank
    # is client 0 (0.45 > 0.35 > 0.2)
    r = repair_to_budget(np.array([3.45, 3.35, 3.2]), np.array([1, 1, 1]), np.array([8, 8, 8]), 10)
    assert r.tolist() == [4, 3, 3]


def test_repair_removes_the_excess_by_largest_overshoot():
    # ideal [2.55, 2.65, 2.8] (sum 8) rounds to [3, 3, 3] = 9; one over -> the largest rank - ideal
    # is client 0 (0.45 > 0.35 > 0.2)
    r = repair_to_budget(np.array([2.55, 2.65, 2.8]), np.array([1, 1, 1]), np.array([8, 8, 8]), 8)
    assert r.tolist() == [2, 3, 3]


def test_repair_respects_bounds_and_clips_an_infeasible_budget():
    lo, hi = np.array([2, 2, 1]), np.array([8, 3, 1])
    # ideal [0, 12, 0]: clamp -> [2, 3, 1] = 6; budget 12 -> client 0 is the only one with room
    assert repair_to_budget(np.array([0.0, 12.0, 0.0]), lo, hi, 12).tolist() == [8, 3, 1]
    # budget above sum(hi) = 12 -> everyone at hi
    assert repair_to_budget(np.array([5.0, 5.0, 5.0]), lo, hi, 40).tolist() == [8, 3, 1]
    # budget below sum(lo) = 5 -> everyone at lo
    assert repair_to_budget(np.array([5.0, 5.0, 5.0]), lo, hi, 0).tolist() == [2, 2, 1]


@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
def test_repair_pass_count_is_bounded_independently_of_n(n):
    """The O(N) argument: each pass is one vectorised O(N) step, and there are at most
    max(hi - lo) + 1 <= r_max - r_min + 1 passes whatever N is."""
    r_min, r_max = 1, 16
    lo, hi = np.full(n, r_min), np.full(n, r_max)
    # worst case: everyone starts at lo and the budget is one short of everyone at hi:
    # gap = 16n - 1 - n = 15n - 1 -> 14 full passes of +1 each, then one partial pass (n - 1 clients)
    ranks, passes = repair_with_passes(np.zeros(n), lo, hi, r_max * n - 1)
    assert ranks.sum() == r_max * n - 1
    assert passes == (15 if n > 1 else 14)  # n = 1: gap 14 closes in 14 single-client passes
    assert passes <= r_max - r_min + 1
    # the other direction: everyone starts at hi, budget one above everyone at lo
    ranks, passes = repair_with_passes(np.full(n, 100.0), lo, hi, r_min * n + 1)
    assert ranks.sum() == r_min * n + 1
    assert passes <= r_max - r_min + 1
    # an ideal that already sums to the budget needs at most one pass (rounding errors < 1 each)
    rng = np.random.default_rng(n)
    ideal = rng.dirichlet(np.ones(n)) * 8 * n
    ideal = np.clip(ideal, r_min, r_max)
    budget = int(round(ideal.sum()))
    ranks, passes = repair_with_passes(ideal, lo, hi, budget)
    assert ranks.sum() == feasible_budget(budget, lo, hi)
    assert passes <= 1


def test_greedy_min_max_hand_computed():
    # t = [r, 3r], budget 8: (6, 2) gives max(6, 6) = 6; (7, 1) gives 7, (5, 3) gives 9
    r = greedy_min_max(np.zeros(2), np.array([1.0, 3.0]), np.array([1, 1]), np.array([16, 16]), 8)
    assert r.tolist() == [6, 2]
    # intercepts: t = [10 + r, 2 + r, 0 + 2r], budget 12, lo 1, hi 8
    # water level T: client 0 stays at 1 (11); client 1 up to 8 (10, capped at hi); client 2 up to 3 (6)
    # 1 + 8 + 3 = 12 -> max = 11 (client 0 at lo)
    r = greedy_min_max(np.array([10.0, 2.0, 0.0]), np.array([1.0, 1.0, 2.0]), np.ones(3, int), np.full(3, 8), 12)
    assert r.sum() == 12
    assert max(10 + r[0], 2 + r[1], 2 * r[2]) == 11
    assert r[0] == 1


# --------------------------------------------------------------------------------------------------
# fixed


def test_fixed_assigns_one_rank_capped_by_memory():
    s = FixedScheduler(r_min=2, r_max=16, r_bar=8)
    assert s.rank == 8  # defaults to round(r_bar)
    assert s.assign(Clients.of([0, 1, 2, 3], max_rank=[16, 8, 4, 1])).tolist() == [8, 8, 4, 1]
    s = FixedScheduler(r_min=2, r_max=16, r_bar=8, rank=12)
    assert s.assign(Clients.of([0, 1, 2], max_rank=[16, 10, 16])).tolist() == [12, 10, 12]
    # a rank above r_max is capped at r_max; below r_min raised to r_min
    assert FixedScheduler(2, 4, 8, rank=16).assign(Clients.of([0, 1])).tolist() == [4, 4]
    assert FixedScheduler(2, 4, 1).assign(Clients.of([0, 1])).tolist() == [2, 2]


# --------------------------------------------------------------------------------------------------
# cvx


def brute_force_max_time(clients: Clients, lo, hi, budget) -> float:
    best = np.inf
    for r in itertools.product(*[range(int(a), int(b) + 1) for a, b in zip(lo, hi)]):
        if sum(r) == budget:
            best = min(best, float(clients.predicted_time(np.array(r)).max()))
    return best


def random_small_case(rng):
    n = int(rng.integers(1, 5))
    r_min = int(rng.integers(1, 3))
    r_max = int(rng.integers(r_min, 7))
    intercept = np.round(rng.uniform(0, 5, n), int(rng.integers(0, 3)))
    slope = np.round(rng.uniform(0, 2, n), int(rng.integers(0, 2)))
    cap = rng.integers(1, r_max + 2, n)
    r_bar = float(rng.uniform(r_min, r_max))
    return Clients.of(np.arange(n), cap, 1.0, intercept, slope), r_min, r_max, r_bar


def test_cvx_hand_computed():
    c = Clients.of([0, 1], time_intercept=0.0, time_per_rank=[1.0, 3.0])
    for solver in ("auto", "greedy"):
        s = CvxScheduler(r_min=1, r_max=16, r_bar=4, solver=solver)
        # budget 8, t = [r0, 3 r1]: (6, 2) -> 6 is optimal (see greedy_min_max test)
        assert s.assign(c).tolist() == [6, 2]
    # fixed at 4: max(4, 12) = 12
    assert c.predicted_time(FixedScheduler(1, 16, 4).assign(c)).max() == 12.0


def test_cvx_and_greedy_agree_with_brute_force_on_small_cases():
    rng = np.random.default_rng(2024)
    for _ in range(120):
        clients, r_min, r_max, r_bar = random_small_case(rng)
        viacvx = CvxScheduler(r_min, r_max, r_bar, solver="auto")
        viagreedy = CvxScheduler(r_min, r_max, r_bar, solver="greedy")
        a, b = viacvx.assign(clients), viagreedy.assign(clients)
        assert viacvx.last_method == "cvxpy" and viacvx.notes == []
        lo, hi = viacvx.bounds(clients)
        budget = feasible_budget(rank_budget(r_bar, len(clients)), lo, hi)
        best = brute_force_max_time(clients, lo, hi, budget)
        for ranks in (a, b):
            assert ranks.sum() == budget
            assert np.all(ranks >= lo) and np.all(ranks <= hi)
            assert clients.predicted_time(ranks).max() == pytest.approx(best, abs=1e-9)


def test_cvx_relaxed_solution_on_integer_ties_is_still_exact():
    # identical clients: the relaxed optimum is exactly integral (r = 4 each); a solver returning
    # 4 +- 1e-9 must not move the result away from the optimum
    c = Clients.of(np.arange(4), time_intercept=1.0, time_per_rank=0.5)
    s = CvxScheduler(1, 8, 4, solver="auto")
    assert s.assign(c).tolist() == [4, 4, 4, 4]
    assert s.last_method == "cvxpy"


@pytest.mark.parametrize("seed", range(6))
def test_cvx_and_greedy_never_lose_to_fixed(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    r_bar = int(rng.integers(2, 9))  # integer: fixed hands out exactly the budget r_bar * n
    cf = rng.choice([1.0, 0.7, 0.15], n)
    clients = Clients.of(np.arange(n), 16, cf, rng.uniform(0, 2, n) / cf, rng.uniform(0.01, 0.2, n) / cf)
    fixed = FixedScheduler(1, 16, r_bar).assign(clients)
    assert fixed.sum() == rank_budget(r_bar, n)
    t_fixed = clients.predicted_time(fixed).max()
    for solver in ("auto", "greedy"):
        ranks = CvxScheduler(1, 16, r_bar, solver=solver).assign(clients)
        assert ranks.sum() == fixed.sum()
        assert clients.predicted_time(ranks).max() <= t_fixed + 1e-9
    # heterogeneous tiers: strictly better than one rank for all
    if len(set(cf)) > 1:
        assert clients.predicted_time(ranks).max() < t_fixed


def test_cvx_respects_memory_caps_and_budget():
    clients = Clients.of(np.arange(5), max_rank=[2, 16, 16, 3, 16], time_intercept=0.0, time_per_rank=1.0)
    for solver in ("auto", "greedy"):
        # budget 25, t = r: the capped clients sit at their caps 2 and 3 (fast), the remaining 20 go
        # over three clients with hi 8 as evenly as possible: {7, 7, 6}, max time 7
        r = CvxScheduler(r_min=1, r_max=8, r_bar=5, solver=solver).assign(clients)
        assert r[0] == 2 and r[3] == 3
        assert sorted(r[[1, 2, 4]].tolist()) == [6, 7, 7]
        # budget 30 exceeds what memory allows (2 + 8 + 8 + 3 + 8 = 29): everyone at hi
        r = CvxScheduler(r_min=1, r_max=8, r_bar=6, solver=solver).assign(clients)
        assert r.tolist() == [2, 8, 8, 3, 8]


def test_cvx_fallback_when_cvxpy_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # `import cvxpy` now raises ImportError
    c = Clients.of(np.arange(3), time_intercept=[0.0, 1.0, 2.0], time_per_rank=[1.0, 0.5, 0.25])
    s = CvxScheduler(1, 16, 4, solver="auto")
    with caplog.at_level("WARNING"):
        r = s.assign(c)
    assert s.last_method == "greedy"
    assert len(s.notes) == 1 and "greedy fallback" in s.notes[0] and "not installed" in s.notes[0]
    assert "greedy fallback" in caplog.text
    lo, hi = s.bounds(c)
    assert r.tolist() == greedy_min_max(c.time_intercept, c.time_per_rank, lo, hi, 12).tolist()
    assert r.sum() == 12


def test_cvx_fallback_when_the_solve_fails(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("solver status infeasible")

    monkeypatch.setattr(cvx_mod, "solve_relaxed", boom)
    s = CvxScheduler(1, 16, 4, solver="cvxpy")
    r = s.assign(Clients.of(np.arange(2), time_per_rank=[1.0, 3.0]))
    assert r.tolist() == [6, 2]
    assert s.last_method == "greedy"
    assert len(s.notes) == 1 and "solve failed" in s.notes[0] and "RuntimeError" in s.notes[0]
    assert "greedy fallback" in s.notes[0]


def test_cvx_solver_greedy_skips_cvxpy_and_says_so(monkeypatch):
    called = []
    monkeypatch.setattr(cvx_mod, "solve_relaxed", lambda *a, **k: called.append(1))
    s = CvxScheduler(1, 16, 4, solver="greedy")
    assert s.assign(Clients.of(np.arange(2), time_per_rank=[1.0, 3.0])).tolist() == [6, 2]
    assert called == []
    assert s.last_method == "greedy"
    assert len(s.notes) == 1 and "greedy" in s.notes[0]


def test_cvx_notes_are_per_assign(monkeypatch):
    s = CvxScheduler(1, 16, 4, solver="auto")
    c = Clients.of(np.arange(2), time_per_rank=[1.0, 3.0])
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    s.assign(c)
    assert s.notes
    monkeypatch.undo()
    s.assign(c)
    assert s.notes == [] and s.last_method == "cvxpy"


@pytest.mark.parametrize("kind", ["fixed", "cvx", "lite"])
def test_empty_selection(kind):
    s = SCHEDULERS[kind](r_min=1, r_max=8, r_bar=4)
    r = s.assign(Clients.of([]))
    assert r.shape == (0,)


# --------------------------------------------------------------------------------------------------
# lite: the formula, by hand


def test_lite_raw_formula_hand_computed():
    s = lite()  # normalize=False, gain_w 1, thr_w 0.5, r_bar 4 -> budget 12, r in [1, 8]
    s.observe(Reports.of([0, 1, 2], rank=4, loss_drop=[0.6, 0.2, -0.3], throughput=[2.0, 1.0, 4.0]))
    c = Clients.of([0, 1, 2])
    # score = 1 * max(drop, 0) + 0.5 * thr = [0.6 + 1.0, 0.2 + 0.5, 0 + 2.0] = [1.6, 0.7, 2.0]
    np.testing.assert_allclose(s.scores(c), [1.6, 0.7, 2.0])
    # ideal = 12 * score / 4.3 = [4.465, 1.953, 5.581] -> round [4, 2, 6], sum 12: no correction
    assert s.assign(c).tolist() == [4, 2, 6]


def test_lite_normalized_formula_hand_computed():
    s = lite(normalize=True)
    s.observe(Reports.of([0, 1, 2], rank=4, loss_drop=[0.6, 0.2, -0.3], throughput=[2.0, 1.0, 4.0]))
    c = Clients.of([0, 1, 2])
    # gain [0.6, 0.2, 0] / mean 0.8/3 = [9/4, 3/4, 0]; thr [2, 1, 4] / mean 7/3 = [6/7, 3/7, 12/7]
    # score = gain + 0.5 thr = [9/4 + 3/7, 3/4 + 3/14, 6/7] = [75/28, 27/28, 24/28]  (sum 126/28)
    np.testing.assert_allclose(s.scores(c), [75 / 28, 27 / 28, 24 / 28])
    # ideal = 12 * [75, 27, 24] / 126 = [7.143, 2.571, 2.286] -> [7, 3, 2] (sum 12)
    assert s.assign(c).tolist() == [7, 3, 2]


def test_lite_greedy_correction_up_and_down():
    # throughput weight 0: score = loss-drop EMA
    up = lite(throughput_weight=0.0, r_bar=10 / 3)  # budget round(10) = 10
    up.observe(Reports.of([0, 1, 2], 4, [0.345, 0.335, 0.32], 1.0))
    # ideal = 10 * [.345, .335, .32] / 1.0 = [3.45, 3.35, 3.2] -> [3, 3, 3] = 9; +1 to client 0 (.45)
    assert up.assign(Clients.of([0, 1, 2])).tolist() == [4, 3, 3]
    down = lite(throughput_weight=0.0, r_bar=8 / 3)  # budget 8
    down.observe(Reports.of([0, 1, 2], 4, [0.255, 0.265, 0.28], 1.0))
    # ideal = 8 * [.255, .265, .28] / .8 = [2.55, 2.65, 2.8] -> [3, 3, 3] = 9; -1 from client 0 (.45)
    assert down.assign(Clients.of([0, 1, 2])).tolist() == [2, 3, 3]


def test_lite_ema_over_several_rounds_hand_computed():
    s = lite(ema=0.25, gain_weight=2.0, throughput_weight=0.05, r_bar=10, r_max=16)  # budget 20
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.4, 0.2], throughput=[10.0, 40.0]))
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.8, -0.2], throughput=[20.0, np.nan]))
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.0, 0.6], throughput=[30.0, 40.0]))
    s.observe(Reports.of([2], 4, loss_drop=[5.0], throughput=[5.0]))  # another client: 0 and 1 untouched
    # client 0 drop: 0.4 -> .25*.8 + .75*.4 = 0.5 -> .25*0 + .75*.5 = 0.375
    # client 1 drop: 0.2 -> .25*(-.2) + .75*.2 = 0.1 -> .25*.6 + .75*.1 = 0.225
    # client 0 thr: 10 -> .25*20 + .75*10 = 12.5 -> .25*30 + .75*12.5 = 16.875
    # client 1 thr: 40 -> (NaN: unchanged) 40 -> .25*40 + .75*40 = 40
    np.testing.assert_allclose(s.gain_ema[:2], [0.375, 0.225])
    np.testing.assert_allclose(s.throughput_ema[:2], [16.875, 40.0])
    c = Clients.of([0, 1])
    # score = 2 * drop + 0.05 * thr = [0.75 + 0.84375, 0.45 + 2.0] = [1.59375, 2.45]
    np.testing.assert_allclose(s.scores(c), [1.59375, 2.45])
    # ideal = 20 * [1.59375, 2.45] / 4.04375 = [7.88, 12.12] -> [8, 12]
    assert s.assign(c).tolist() == [8, 12]


def test_lite_first_observation_initialises_ema():
    s = lite(ema=0.1)
    s.observe(Reports.of([4], 2, loss_drop=[0.7], throughput=[3.0]))
    # first value is taken as is (not 0.1 * 0.7 from a zero start)
    assert s.gain_ema[4] == pytest.approx(0.7) and s.throughput_ema[4] == pytest.approx(3.0)
    assert np.isnan(s.gain_ema[:4]).all()


def test_lite_cold_start_takes_mean_of_observed():
    s = lite()  # raw, gain_w 1, thr_w 0.5, budget 12 for three
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.4, -0.2], throughput=[2.0, 6.0]))
    c = Clients.of([0, 1, 2])  # client 2 never seen
    # counted drops [0.4, 0] -> newcomer 0.2; throughputs [2, 6] -> newcomer 4
    # score = [0.4 + 1, 0 + 3, 0.2 + 2] = [1.4, 3.0, 2.2]  (sum 6.6)
    np.testing.assert_allclose(s.scores(c), [1.4, 3.0, 2.2])
    # ideal = 12 * [1.4, 3, 2.2] / 6.6 = [2.545, 5.455, 4.0] -> [3, 5, 4]
    assert s.assign(c).tolist() == [3, 5, 4]


def test_lite_cold_start_uses_observed_clients_of_the_selection_only():
    s = lite()
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.9, 0.1], throughput=[1.0, 9.0]))
    # nobody in this selection was observed: equal split of budget 8 -> [4, 4]
    assert s.assign(Clients.of([5, 7])).tolist() == [4, 4]
    # unseen + client 1: newcomer takes client 1's values -> equal scores
    assert s.assign(Clients.of([1, 9])).tolist() == [4, 4]


@pytest.mark.parametrize("normalize", [False, True])
def test_lite_nobody_observed_is_an_equal_split(normalize):
    s = lite(normalize=normalize, r_bar=10 / 3)  # budget 10 over 3: 10/3 each -> three 3s plus one extra
    r = s.assign(Clients.of([0, 1, 2]))
    assert r.sum() == 10 and sorted(r.tolist()) == [3, 3, 4]
    s = lite(normalize=normalize, r_bar=5)
    assert s.assign(Clients.of(np.arange(6))).tolist() == [5] * 6


def test_lite_deadline_penalty_and_its_reset():
    s = lite(throughput_weight=0.0, r_bar=6, r_max=16, deadline_penalty=0.5)  # budget 12
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.5, 0.5], throughput=1.0, missed_deadline=[True, False]))
    c = Clients.of([0, 1])
    # score = [0.5 * 0.5, 0.5] = [0.25, 0.5] -> ideal 12 * [1/3, 2/3] = [4, 8]
    np.testing.assert_allclose(s.scores(c), [0.25, 0.5])
    assert s.assign(c).tolist() == [4, 8]
    # next round client 0 is on time again (same drop, EMA stays 0.5): penalty lifted -> [6, 6]
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.5, 0.5], throughput=1.0, missed_deadline=[False, False]))
    assert s.assign(c).tolist() == [6, 6]


def test_lite_deadline_penalty_applies_after_normalisation():
    s = lite(normalize=True, gain_weight=1.0, throughput_weight=0.5, deadline_penalty=0.2)
    s.observe(Reports.of([0, 1], 4, loss_drop=[0.3, 0.3], throughput=[1.0, 3.0], missed_deadline=[True, False]))
    # gain [1, 1]; thr [1, 3] / 2 = [0.5, 1.5]; score = [1.25, 1.75]; client 0 x 0.2 -> 0.25
    np.testing.assert_allclose(s.scores(Clients.of([0, 1])), [0.25, 1.75])
    # ideal = 8 * [0.25, 1.75] / 2 = [1, 7]
    assert s.assign(Clients.of([0, 1])).tolist() == [1, 7]


def test_lite_negative_loss_drops_count_as_zero():
    s = lite(throughput_weight=0.0, r_min=2, r_max=16, r_bar=6)  # budget 12
    s.observe(Reports.of([0, 1], 4, loss_drop=[-0.5, 0.5], throughput=1.0))
    c = Clients.of([0, 1])
    np.testing.assert_allclose(s.scores(c), [0.0, 0.5])
    # ideal [0, 12] -> clamp [2, 12] = 14 -> two over; client 0 is at r_min -> [2, 10]
    assert s.assign(c).tolist() == [2, 10]
    # every drop negative and no throughput weight: all scores 0 -> equal split
    s.observe(Reports.of([0, 1], 4, loss_drop=[-5.0, -5.0], throughput=1.0))
    assert s.assign(c).tolist() == [6, 6]


def test_lite_memory_caps_and_bounds():
    s = lite(normalize=True, r_min=2, r_max=8, r_bar=4)  # budget 16
    s.observe(Reports.of([0, 1, 2, 3], 4, loss_drop=[1.0, 0.1, 0.1, 0.1], throughput=[100.0, 1.0, 1.0, 1.0]))
    c = Clients.of([0, 1, 2, 3], max_rank=[3, 16, 16, 1])
    # gain / mean: [40, 4, 4, 4] / 13; thr / mean: [400, 4, 4, 4] / 103
    # score0 = 40/13 + 200/103 = 5.0187, others 4/13 + 2/103 = 0.3271 (sum 6)
    np.testing.assert_allclose(s.scores(c), [40 / 13 + 200 / 103] + [4 / 13 + 2 / 103] * 3)
    # ideal = 16 * score / 6 = [13.38, 0.87, 0.87, 0.87]; bounds lo [2, 2, 2, 1], hi [3, 8, 8, 1]
    # clamp -> [3, 2, 2, 1] = 8; the 8 missing ranks go to the only clients with room: 1 and 2
    assert s.assign(c).tolist() == [3, 6, 6, 1]
    # budget above what memory allows (sum hi = 3 + 8 + 8 + 1 = 20 < 6 * 4 = 24): everyone at their cap
    s.r_bar = 6
    assert s.assign(c).tolist() == [3, 8, 8, 1]


# --------------------------------------------------------------------------------------------------
# lite: properties


def random_round(rng, n, n_ids):
    cid = rng.choice(n_ids, size=n, replace=False)
    drops = rng.normal(0.1, 0.3, n)  # some negative
    thr = rng.lognormal(3, 1, n)
    thr[rng.random(n) < 0.05] = np.nan  # a few non-finite throughputs
    return Reports.of(cid, 4, drops, thr, rng.random(n) < 0.3)


@pytest.mark.parametrize("normalize", [False, True])
def test_lite_sums_exactly_to_budget_and_respects_bounds(normalize):
    rng = np.random.default_rng(7 + normalize)
    for trial in range(150):
        n = int(rng.choice([1, 2, 3, 5, 10, 37, 100, 500]))
        r_min = int(rng.integers(1, 5))
        r_max = int(rng.integers(r_min, 33))
        r_bar = float(rng.uniform(r_min, r_max))  # r_min * N <= budget <= r_max * N
        s = LiteScheduler(
            r_min,
            r_max,
            r_bar,
            ema=float(rng.uniform(0.05, 1.0)),
            gain_weight=float(rng.uniform(0, 3)),
            throughput_weight=float(rng.uniform(0, 3)),
            deadline_penalty=float(rng.uniform(0, 1)),
            normalize=normalize,
        )
        n_ids = 2 * n
        for _ in range(int(rng.integers(0, 4))):  # 0..3 rounds observed; some selected clients unseen
            s.observe(random_round(rng, min(n, n_ids), n_ids))
        cid = rng.choice(n_ids, size=n, replace=False)
        capped = trial % 2 == 1
        max_rank = rng.integers(1, r_max + 8, n) if capped else 1 << 30
        clients = Clients.of(cid, max_rank=max_rank)
        ranks = s.assign(clients)
        lo, hi = s.bounds(clients)
        budget = rank_budget(r_bar, n)
        assert ranks.dtype.kind == "i" and ranks.shape == (n,)
        assert np.all(ranks >= lo) and np.all(ranks <= hi)
        assert np.all(ranks <= r_max)
        assert ranks.sum() == min(max(budget, lo.sum()), hi.sum())
        if not capped:
            assert r_min * n <= budget <= r_max * n
            assert ranks.sum() == budget
            assert np.all(ranks >= r_min)


def test_lite_higher_score_never_gets_a_lower_rank():
    rng = np.random.default_rng(11)
    for _ in range(30):
        n = int(rng.integers(2, 60))
        s = lite(normalize=True, r_min=1, r_max=32, r_bar=float(rng.uniform(1, 32)))
        s.observe(Reports.of(np.arange(n), 4, rng.normal(0.1, 0.3, n), rng.lognormal(3, 1, n), rng.random(n) < 0.3))
        c = Clients.of(np.arange(n))
        score, ranks = s.scores(c), s.assign(c)
        order = np.argsort(score, kind="stable")
        assert np.all(np.diff(ranks[order]) >= 0)


@pytest.mark.parametrize("n", [10, 1000, 100_000])
def test_lite_correction_passes_do_not_grow_with_n(monkeypatch, n):
    """lite is O(N): scores are vectorised over the selection and the integer correction makes at
    most r_max - r_min + 1 vectorised passes, independently of N."""
    passes = []

    def counting(ideal, lo, hi, budget):
        ranks, k = repair_with_passes(ideal, lo, hi, budget)
        passes.append(k)
        return ranks

    monkeypatch.setattr(lite_mod, "repair_to_budget", counting)
    rng = np.random.default_rng(n)
    r_min, r_max = 2, 16
    s = LiteScheduler(r_min, r_max, r_bar=8, normalize=True)
    s.observe(Reports.of(np.arange(n), 4, rng.normal(0.1, 0.5, n), rng.lognormal(3, 2, n), rng.random(n) < 0.2))
    for caps in (1 << 30, rng.integers(1, 20, n)):
        ranks = s.assign(Clients.of(np.arange(n), max_rank=caps))
        lo, hi = s.bounds(Clients.of(np.arange(n), max_rank=caps))
        assert ranks.sum() == feasible_budget(8 * n, lo, hi)
    assert len(passes) == 2
    assert max(passes) <= r_max - r_min + 1


def test_lite_state_dict_round_trip():
    rng = np.random.default_rng(5)
    s = lite(normalize=True, r_max=16, r_bar=6, ema=0.3)
    for _ in range(3):
        s.observe(random_round(rng, 6, 12))
    c = Clients.of([0, 3, 5, 11, 20])  # 20: beyond the stored arrays
    state = json.loads(json.dumps(s.state_dict()))  # survives a JSON checkpoint (NaN = unobserved)
    t = lite(normalize=True, r_max=16, r_bar=6, ema=0.3)
    t.load_state_dict(state)
    np.testing.assert_array_equal(t.gain_ema, s.gain_ema)
    np.testing.assert_array_equal(t.throughput_ema, s.throughput_ema)
    np.testing.assert_array_equal(t.missed, s.missed)
    np.testing.assert_allclose(t.scores(c), s.scores(c))
    assert t.assign(c).tolist() == s.assign(c).tolist()
    # and they keep evolving identically
    nxt = random_round(rng, 6, 12)
    s.observe(nxt)
    t.observe(nxt)
    assert t.assign(c).tolist() == s.assign(c).tolist()
    assert FixedScheduler(1, 8, 4).state_dict() == {}
