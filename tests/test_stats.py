"""The comparison statistics of `fedranklite report`: Holm, Wilcoxon, the minimum detectable effect, BCa, and the
primary metrics read from a run's rounds (score averaged over a horizon, sustained and restricted time to target),
each checked against a hand-computed or textbook case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedranklite.core.records import RoundRecord
from fedranklite.study import stats
from fedranklite.study.sweep_results import restricted, score_auc, sustained_time_to_target


def test_holm_adjusts_step_down_and_keeps_order():
    # m = 3: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)
    assert stats.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06], nan_ok=True)
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # 0.5 * 2 capped at 1; 0.9 * 1 raised to 1 (monotone)
    assert stats.holm([]) == [] and stats.holm([None]) == [None]


def test_holm_is_never_below_the_raw_p_and_never_above_bonferroni():
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0, 0.2, size=7))
    adjusted = stats.holm(p)
    assert all(a >= x for a, x in zip(adjusted, p))
    assert all(a <= min(1.0, 7 * x) + 1e-12 for a, x in zip(adjusted, p))


def test_wilcoxon_exact_p_of_all_positive_differences():
    # 8 positive differences, no ties: the exact two-sided p is 2 / 2^8
    assert stats.wilcoxon_p([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(2 / 256)
    assert stats.wilcoxon_p([0.0, 0.0]) == 1.0 and stats.wilcoxon_p([]) is None
    assert stats.wilcoxon_p([1, -1, 2, -2, 3, -3]) == pytest.approx(1.0)


def test_minimum_detectable_effect_matches_the_paired_t_formula_and_shrinks_with_seeds():
    d = [0.01, 0.02, -0.01, 0.0, 0.03]
    from scipy.stats import t

    sd = np.std(d, ddof=1)
    expected = (t.ppf(0.975, 4) + t.ppf(0.8, 4)) * sd / math.sqrt(5)
    assert stats.minimum_detectable_effect(d) == pytest.approx(expected)
    more = d * 4  # the same spread over 20 seeds
    assert stats.minimum_detectable_effect(more) < stats.minimum_detectable_effect(d) / 1.8
    assert stats.minimum_detectable_effect([0.1]) is None


def test_bca_ci_is_finite_for_constant_and_two_value_samples():
    assert stats.mean_ci([0.2, 0.2, 0.2]).to_json() == {"n": 3, "mean": 0.2, "ci": [0.2, 0.2]}
    est = stats.mean_ci([0.3, 0.8])  # BCa undefined for two points: the percentile interval stands in
    assert (est.lo, est.hi) == (0.3, 0.8)
    with pytest.raises(ValueError, match="CI method"):
        stats.mean_ci([1.0, 2.0], method="studentised")


def test_bca_covers_better_than_percentile_on_a_skewed_sample():
    """Over 300 samples of 10 lognormal draws, BCa's 95 % interval covers the true mean at least as often as the
    percentile interval (the reason the report uses it)."""
    rng = np.random.default_rng(1)
    truth = math.exp(0.5)
    hits = {"BCa": 0, "percentile": 0}
    for i in range(300):
        x = rng.lognormal(0.0, 1.0, size=10)
        for method in hits:
            est = stats.mean_ci(x, resamples=999, seed=i, method=method)
            hits[method] += est.lo <= truth <= est.hi
    assert hits["BCa"] >= hits["percentile"]


def rec(r: int, t: float, score):
    return RoundRecord.from_json(
        {"round": r, "selected": [], "clients": [], "out_of_memory": [], "rejected": {}, "stragglers": []}
        | {"compliant": True, "round_sim_seconds": 10.0, "sim_time": t, "fairness": {}, "eval": None}
        | {"score": score, "bytes_up": 0, "bytes_down": 0, "wall_seconds": 1.0}
    )


def test_score_auc_is_the_time_average_of_the_step_curve():
    records = [rec(1, 10.0, 0.5), rec(2, 20.0, None), rec(3, 30.0, 0.9), rec(4, 40.0, 0.7)]
    # [0, 10): 0.5 (the first evaluation held backwards), [10, 30): 0.5, [30, 35): 0.9 -> (30 * 0.5 + 5 * 0.9) / 35
    assert score_auc(records, 35.0) == pytest.approx((30 * 0.5 + 5 * 0.9) / 35)
    # beyond the last evaluation the last score holds
    assert score_auc(records, 50.0) == pytest.approx((30 * 0.5 + 10 * 0.9 + 10 * 0.7) / 50)
    # earlier learning with the same final score has the larger area
    early = [rec(1, 10.0, 0.9), rec(2, 20.0, 0.9), rec(3, 30.0, 0.9), rec(4, 40.0, 0.7)]
    assert score_auc(early, 40.0) > score_auc(records, 40.0)
    assert score_auc([rec(1, 10.0, None)], 40.0) is None and score_auc(records, 0.0) is None


def test_sustained_time_to_target_needs_two_evaluations_in_a_row():
    records = [rec(1, 10.0, 0.86), rec(2, 20.0, 0.80), rec(3, 30.0, 0.87), rec(4, 40.0, 0.88)]
    assert sustained_time_to_target(records, 0.85, True) == 30.0  # round 1 alone is a lucky evaluation
    assert sustained_time_to_target(records, 0.85, True, in_a_row=1) == 10.0
    assert sustained_time_to_target(records, 0.95, True) is None
    assert sustained_time_to_target(records, None, True) is None
    losses = [rec(1, 10.0, 0.5), rec(2, 20.0, 0.3), rec(3, 30.0, 0.2)]
    assert sustained_time_to_target(losses, 0.35, False) == 20.0  # lower is better
    assert restricted(None, 100.0) == 100.0 and restricted(30.0, 100.0) == 30.0 and restricted(130.0, 100.0) == 100.0
