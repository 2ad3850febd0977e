"""`cvx`'s default solver, `bisect` (`bisect_min_max` in schedulers/base.py), against the heap greedy,
cvxpy (`solver: auto`), brute force and hand-worked answers.

    minimise max_i (a_i + b_i * r_i)  s.t.  sum_i r_i = budget (clipped to [sum lo, sum hi]),
                                            lo_i <= r_i <= hi_i, r_i integer

Times are compared exactly (==): bisect evaluates a_i + b_i * r with the same float operations as
`Clients.predicted_time`, so an optimal assignment's max time is the same float whatever solver found
it. bisect also reproduces the greedy's ranks (same tie-break), which is checked too.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from fedranklite.federation.schedulers import SCHEDULERS, Clients, feasible_budget, greedy_min_max, rank_budget
from fedranklite.federation.schedulers import cvx as cvx_mod
from fedranklite.federation.schedulers import minmax as minmax_mod
from fedranklite.federation.schedulers.cvx import CvxParams, CvxScheduler
from fedranklite.federation.schedulers.minmax import bisect_min_max


def max_time(a, b, ranks) -> float:
    return float(Clients.of(np.arange(len(ranks)), 1, 1.0, a, b).predicted_time(ranks).max()) if len(ranks) else 0.0


def check_feasible(ranks, lo, hi, budget):
    assert ranks.dtype.kind == "i"
    assert ranks.shape == lo.shape
    assert np.all(ranks >= lo) and np.all(ranks <= hi)
    assert int(ranks.sum()) == feasible_budget(budget, lo, hi)


# --------------------------------------------------------------------------------------------------
# random instances


def random_times(rng, n):
    """Intercepts and slopes >= 0 with zeros and exact ties in various proportions."""
    kind_a, kind_b = int(rng.integers(4)), int(rng.integers(5))
    a = [
        rng.uniform(0, 20, n),
        np.round(rng.uniform(0, 5, n), 1),
        np.full(n, float(rng.choice([0.0, 3.0]))),
        rng.choice([0.0, 1.0, 2.5], n),
    ][kind_a]
    b = [
        rng.uniform(0, 2, n),
        np.round(rng.uniform(0, 2, n), 1),
        rng.choice([0.0, 0.5, 1.0, 2.0], n),
        np.zeros(n),
        rng.uniform(0.01, 1, n) / rng.choice([1.0, 0.7, 0.15], n),
    ][kind_b]
    b = np.where(rng.random(n) < 0.15, 0.0, b)  # some zero slopes everywhere
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def random_scheduler_case(rng):
    """A CvxScheduler round: N in 1..60, memory caps from 0 up, budgets below / inside / above the
    feasible range."""
    n = int(rng.integers(1, 61))
    r_min = int(rng.integers(1, 4))
    r_max = int(rng.integers(r_min, 17))
    a, b = random_times(rng, n)
    # memory caps: mostly r_min and up, some below r_min (lo == hi) down to 0 (no memory at all)
    cap = np.where(rng.random(n) < 0.2, rng.integers(0, r_min + 1, n), rng.integers(r_min, r_max + 3, n))
    if rng.random() < 0.1:
        cap = np.full(n, r_min)  # everyone lo == hi
    hi = np.minimum(cap, r_max)
    mean_lo, mean_hi = float(np.minimum(r_min, hi).mean()), float(hi.mean())
    r_bar = [rng.uniform(0.05, max(mean_lo, 0.1)), rng.uniform(mean_lo, mean_hi), rng.uniform(mean_hi, mean_hi + 4)][
        int(rng.integers(3))
    ]  # aimed below / inside / above the feasible range (the test counts where it lands)
    r_bar = max(float(r_bar), 0.05)
    return Clients.of(np.arange(n), cap, 1.0, a, b), r_min, r_max, r_bar


def budget_side(budget, lo, hi) -> str:
    return "below" if budget < lo.sum() else "above" if budget > hi.sum() else "inside"


def test_bisect_matches_greedy_and_cvxpy_on_random_scheduler_rounds():
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(20261127)
    sides = {"below": 0, "inside": 0, "above": 0}
    cvxpy_used = lo_eq_hi = zero_caps = zero_slopes = 0
    for _ in range(240):
        clients, r_min, r_max, r_bar = random_scheduler_case(rng)
        viabisect = CvxScheduler(r_min, r_max, r_bar)  # the default solver
        viagreedy = CvxScheduler(r_min, r_max, r_bar, solver="greedy")
        viacvxpy = CvxScheduler(r_min, r_max, r_bar, solver="auto")
        rb, rg, rc = viabisect.assign(clients), viagreedy.assign(clients), viacvxpy.assign(clients)
        assert viabisect.last_method == "bisect" and viabisect.notes == []
        lo, hi = viabisect.bounds(clients)
        budget = rank_budget(r_bar, len(clients))
        for ranks in (rb, rg, rc):
            check_feasible(ranks, lo, hi, budget)
        t_bisect = clients.predicted_time(rb).max()
        assert t_bisect == clients.predicted_time(rg).max()
        assert np.array_equal(rb, rg)  # same tie-break as the heap
        if viacvxpy.last_method == "cvxpy":
            cvxpy_used += 1
            assert t_bisect == clients.predicted_time(rc).max()
        sides[budget_side(budget, lo, hi)] += 1
        lo_eq_hi += bool(np.any(lo == hi))
        zero_caps += bool(np.any(hi == 0))
        zero_slopes += bool(np.any(clients.time_per_rank == 0))
    # the instances cover what they are meant to
    assert min(sides.values()) >= 50, sides
    assert cvxpy_used >= 200
    assert lo_eq_hi >= 150 and zero_caps >= 100 and zero_slopes >= 150


def random_helper_case(rng, n_max=60):
    """Direct bisect_min_max inputs: any 0 <= lo <= hi (not only min(r_min, hi)), any budget around
    the feasible range."""
    n = int(rng.integers(1, n_max + 1))
    a, b = random_times(rng, n)
    hi = rng.integers(0, 21, n)
    lo = np.minimum(rng.integers(0, 6, n), hi)
    if rng.random() < 0.1:
        lo = hi.copy()
    budget = int(rng.integers(int(lo.sum()) - 5, int(hi.sum()) + 6))
    return a, b, lo, hi, budget


@pytest.mark.parametrize("forced_bisection", [False, True])
def test_bisect_matches_greedy_on_random_bounds(monkeypatch, forced_bisection):
    if forced_bisection:  # never list the bracket's units: bisect until the bracket's ends are adjacent floats
        monkeypatch.setattr(minmax_mod, "_ENUMERATE_PER_CLIENT", 0)
        monkeypatch.setattr(minmax_mod, "_ENUMERATE_EXTRA", 0)
    rng = np.random.default_rng(7 + forced_bisection)
    for _ in range(300):
        a, b, lo, hi, budget = random_helper_case(rng)
        ranks = bisect_min_max(a, b, lo, hi, budget)
        greedy = greedy_min_max(a, b, lo, hi, budget)
        check_feasible(ranks, lo, hi, budget)
        assert max_time(a, b, ranks) == max_time(a, b, greedy)
        assert np.array_equal(ranks, greedy)


def test_bisect_matches_greedy_when_probes_come_from_a_sample():
    # from 4 * 1024 open clients on, the first probes are read off a sample of clients
    rng = np.random.default_rng(11)
    for n in (4096, 6000, 9000):
        a, b = random_times(rng, n)
        hi = rng.integers(0, 17, n)
        lo = np.minimum(2, hi)
        for budget in (int(lo.sum()) + 1, int(0.5 * (lo.sum() + hi.sum())), int(hi.sum()) - 1):
            ranks = bisect_min_max(a, b, lo, hi, budget)
            assert np.array_equal(ranks, greedy_min_max(a, b, lo, hi, budget))


@pytest.mark.parametrize("forced_bisection", [False, True])
def test_bisect_on_awkward_floats_matches_greedy(monkeypatch, forced_bisection):
    # times on plateaus (1e16 + r rounds to even), slopes far below the intercept's ulp, huge intercepts,
    # slopes that make (T - a) / b overflow: the floor estimate is wrong and must be corrected
    if forced_bisection:
        monkeypatch.setattr(minmax_mod, "_ENUMERATE_PER_CLIENT", 0)
        monkeypatch.setattr(minmax_mod, "_ENUMERATE_EXTRA", 0)
    rng = np.random.default_rng(3)
    cases = [
        (np.full(5, 1e16), np.array([1.0, 1.0, 3.0, 0.5, 2.0])),
        (np.array([1.0, 1.0, 2.0, 0.0]), np.array([1e-17, 3e-16, 1e-300, 1e-300])),
        (np.array([1e300, 1e300, 0.0]), np.array([1e290, 0.0, 1e-300])),
        (np.array([0.1 + 0.2, 0.3, 0.3]), np.array([0.1, 0.1, 0.0])),
    ]
    for a, b in cases:
        n = len(a)
        for _ in range(30):
            hi = rng.integers(0, 12, n)
            lo = np.minimum(rng.integers(0, 3, n), hi)
            budget = int(rng.integers(int(lo.sum()), int(hi.sum()) + 1))
            ranks = bisect_min_max(a, b, lo, hi, budget)
            check_feasible(ranks, lo, hi, budget)
            assert np.array_equal(ranks, greedy_min_max(a, b, lo, hi, budget))


# --------------------------------------------------------------------------------------------------
# brute force


def brute_force_best(a, b, lo, hi, budget) -> float:
    grid = np.array(list(itertools.product(*[range(int(x), int(y) + 1) for x, y in zip(lo, hi)])), dtype=np.int64)
    grid = grid[grid.sum(axis=1) == feasible_budget(budget, lo, hi)]
    times = a + b * grid.astype(np.float64)  # the float operations of Clients.predicted_time
    return float(times.max(axis=1).min())


def test_bisect_is_optimal_by_brute_force_on_tiny_instances():
    rng = np.random.default_rng(99)
    for _ in range(300):
        n = int(rng.integers(1, 5))
        a, b = random_times(rng, n)
        hi = rng.integers(0, 6, n)
        lo = np.minimum(rng.integers(0, 3, n), hi)
        budget = int(rng.integers(int(lo.sum()) - 2, int(hi.sum()) + 3))
        ranks = bisect_min_max(a, b, lo, hi, budget)
        check_feasible(ranks, lo, hi, budget)
        assert max_time(a, b, ranks) == brute_force_best(a, b, lo, hi, budget)


# --------------------------------------------------------------------------------------------------
# hand cases


def test_hand_two_clients():
    # t = [r, 3r], budget 8: (6, 2) gives max(6, 6) = 6; (7, 1) gives 7, (5, 3) gives 9
    r = bisect_min_max(np.zeros(2), np.array([1.0, 3.0]), np.array([1, 1]), np.array([16, 16]), 8)
    assert r.tolist() == [6, 2]


def test_hand_intercepts_and_a_binding_client_at_lo():
    # t = [10 + r, 2 + r, 2r], lo 1, hi 8, budget 12: 9 units above lo. Their times: client 0 12, 13, ..;
    # client 1 4, 5, .., 10; client 2 4, 6, 8, ..; the 9 cheapest are 4 (c1), 4 (c2), 5, 6 (c1), 6 (c2),
    # 7, 8 (c1), 8 (c2), 9 (c1) -> ranks (1, 7, 4), times (11, 9, 8): client 0 at lo sets the max, 11
    a, b = np.array([10.0, 2.0, 0.0]), np.array([1.0, 1.0, 2.0])
    r = bisect_min_max(a, b, np.ones(3, int), np.full(3, 8), 12)
    assert r.tolist() == [1, 7, 4]
    assert max_time(a, b, r) == 11.0


def test_hand_ties_at_the_optimal_time_go_to_the_lowest_index():
    # t = 2r for three clients, lo 0, hi 10, budget 4: unit times 2, 2, 2, 4, 4, 4, ... -> tau = 4;
    # the three units at 2 are taken, one unit at 4 is left for three clients: client 0 gets it
    r = bisect_min_max(np.zeros(3), np.full(3, 2.0), np.zeros(3, int), np.full(3, 10), 4)
    assert r.tolist() == [2, 1, 1]
    # zero slopes: all units of a client cost its intercept; client 0 takes all its units at the tie first
    r = bisect_min_max(np.ones(3), np.zeros(3), np.ones(3, int), np.full(3, 4), 7)
    assert r.tolist() == [4, 2, 1]


def test_hand_zero_slopes_hand_out_the_cheapest_first():
    # t = [5, 1, 3] whatever the rank, lo 1, hi 4, budget 6: three units to hand out, client 1's cost 1
    r = bisect_min_max(np.array([5.0, 1.0, 3.0]), np.zeros(3), np.ones(3, int), np.full(3, 4), 6)
    assert r.tolist() == [1, 4, 1]


def test_hand_one_ulp_apart_is_not_a_tie():
    # t = [0.1 r, 0.3 r], hi (3, 1), budget 3: unit times 0.1, 0.2, 0.1 * 3 = 0.30000000000000004 and
    # 0.3 * 1 = 0.3. The third cheapest is client 1's 0.3, one ulp below client 0's third unit: a
    # tolerance would call them a tie and, by index, give client 0 its third unit (max 0.30000000000000004)
    a, b = np.zeros(2), np.array([0.1, 0.3])
    assert 0.1 * 3 > 0.3
    r = bisect_min_max(a, b, np.zeros(2, int), np.array([3, 1]), 3)
    assert r.tolist() == [2, 1]
    assert max_time(a, b, r) == 0.3


def test_hand_slope_below_the_intercepts_ulp():
    # 1 + 1e-300 * r == 1.0 for every r: all of client 0's million units cost 1.0, before client 1's
    # 1.5, 2.0, ...; budget 10**6 + 2 -> client 1 takes two units, max time 2.0 (the greedy would take
    # seconds here)
    a, b = np.array([1.0, 1.0]), np.array([1e-300, 0.5])
    r = bisect_min_max(a, b, np.zeros(2, int), np.array([10**6, 4]), 10**6 + 2)
    assert r.tolist() == [10**6, 2]
    assert max_time(a, b, r) == 2.0


def test_hand_budget_outside_the_feasible_range_is_clipped():
    a, b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.5, 0.0])
    lo, hi = np.array([1, 2, 0]), np.array([4, 2, 3])
    assert bisect_min_max(a, b, lo, hi, 0).tolist() == [1, 2, 0]  # below sum(lo) = 3
    assert bisect_min_max(a, b, lo, hi, 3).tolist() == [1, 2, 0]
    assert bisect_min_max(a, b, lo, hi, 9).tolist() == [4, 2, 3]  # sum(hi)
    assert bisect_min_max(a, b, lo, hi, 100).tolist() == [4, 2, 3]


def test_hand_empty_equal_bounds_and_zero_memory():
    empty = bisect_min_max(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0, int), 5)
    assert empty.shape == (0,) and empty.dtype.kind == "i"
    # lo == hi: nothing to choose
    assert bisect_min_max(np.ones(3), np.ones(3), np.array([2, 0, 5]), np.array([2, 0, 5]), 4).tolist() == [2, 0, 5]
    # a client without memory (hi = 0) gets 0 even when it is the fastest
    r = bisect_min_max(np.zeros(3), np.array([0.1, 1.0, 1.0]), np.zeros(3, int), np.array([0, 8, 8]), 6)
    assert r.tolist() == [0, 3, 3]


def test_hand_all_slopes_zero_budget_in_the_middle():
    # every client's time is its intercept: the max is fixed at max(a) = 4 whatever the ranks
    a = np.array([4.0, 1.0, 2.0, 1.0])
    r = bisect_min_max(a, np.zeros(4), np.ones(4, int), np.full(4, 3), 9)
    # 5 units: client 1 (1.0) takes 2, client 3 (1.0) takes 2, client 2 (2.0) takes 1
    assert r.tolist() == [1, 3, 2, 3]
    assert max_time(a, np.zeros(4), r) == 4.0


def test_bisect_rejects_times_it_cannot_order():
    ones = np.ones(2)
    with pytest.raises(ValueError, match="slopes must be >= 0"):
        bisect_min_max(ones, np.array([1.0, -0.5]), np.zeros(2, int), np.full(2, 4), 4)
    with pytest.raises(ValueError, match="finite"):
        bisect_min_max(np.array([1.0, np.nan]), ones, np.zeros(2, int), np.full(2, 4), 4)
    with pytest.raises(ValueError, match="finite"):
        bisect_min_max(ones, np.array([np.inf, 1.0]), np.zeros(2, int), np.full(2, 4), 4)


# --------------------------------------------------------------------------------------------------
# the scheduler around it


def test_bisect_is_the_default_solver():
    assert CvxParams().solver == "bisect"
    assert SCHEDULERS.parse(dict(type="cvx")).solver == "bisect"
    s = CvxScheduler(1, 16, 4)
    assert s.solver == "bisect"
    c = Clients.of([0, 1], time_intercept=0.0, time_per_rank=[1.0, 3.0])
    assert s.assign(c).tolist() == [6, 2]
    assert s.last_method == "bisect" and s.notes == []
    for solver in ("bisect", "cvxpy", "greedy", "auto"):
        assert SCHEDULERS.parse(dict(type="cvx", solver=solver)).solver == solver
    with pytest.raises(Exception, match="solver"):
        SCHEDULERS.parse(dict(type="cvx", solver="simplex"))
    with pytest.raises(ValueError, match="unknown solver"):
        CvxScheduler(1, 16, 4, solver="simplex")


def test_bisect_needs_no_cvxpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # `import cvxpy` raises ImportError

    def boom(*a, **k):
        raise AssertionError("bisect must not call cvxpy")

    monkeypatch.setattr(cvx_mod, "solve_relaxed", boom)
    s = CvxScheduler(1, 16, 4, solver="bisect")
    r = s.assign(Clients.of(np.arange(3), time_intercept=[0.0, 1.0, 2.0], time_per_rank=[1.0, 0.5, 0.25]))
    assert s.last_method == "bisect" and s.notes == []
    assert r.sum() == 12


def test_bisect_falls_back_to_greedy_on_unorderable_times(caplog):
    s = CvxScheduler(1, 16, 4)
    c = Clients.of(np.arange(2), time_intercept=[0.0, 1.0], time_per_rank=[1.0, -1.0])
    with caplog.at_level("WARNING"):
        r = s.assign(c)
    assert s.last_method == "greedy"
    assert len(s.notes) == 1 and "bisect" in s.notes[0] and "greedy fallback" in s.notes[0]
    assert "greedy fallback" in caplog.text
    lo, hi = s.bounds(c)
    assert r.tolist() == greedy_min_max(c.time_intercept, c.time_per_rank, lo, hi, 8).tolist()
    # the next, well-formed round is bisect's again, with no notes left over
    s.assign(Clients.of(np.arange(2), time_per_rank=[1.0, 3.0]))
    assert s.last_method == "bisect" and s.notes == []


def test_bisect_empty_selection():
    s = CvxScheduler(1, 8, 4)
    r = s.assign(Clients.of([]))
    assert r.shape == (0,) and s.last_method == ""
