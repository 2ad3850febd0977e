"""Score functions (scoring.py, scikit-learn and SciPy underneath) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedranklite.data.scoring import (
    SCORE_METRICS,
    ScoreMetric,
    accuracy,
    default_metric,
    f1_binary,
    f1_macro,
    mse,
    pearson,
    spearman,
)

approx = pytest.approx


def test_accuracy():
    assert accuracy(np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 0, 1])) == approx(3 / 5)
    assert accuracy([1, 1], [1, 1]) == 1.0
    assert accuracy([0, 0], [1, 1]) == 0.0
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_f1_binary_is_the_f1_of_class_1():
    # tp = rows 0, 3; fp = row 1; fn = row 4  ->  2*2 / (2*2 + 1 + 1) = 4/6
    pred = np.array([1, 1, 0, 1, 0, 0])
    label = np.array([1, 0, 0, 1, 1, 0])
    assert f1_binary(pred, label) == approx(4 / 6)
    assert f1_binary(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert f1_binary(np.array([0, 0]), np.array([1, 1])) == 0.0  # no true positive
    assert f1_binary(np.array([0, 0]), np.array([0, 0])) == 0.0  # no positive anywhere


def test_f1_macro():
    pred = np.array([0, 0, 0, 0, 1, 2])
    label = np.array([0, 0, 1, 1, 1, 2])
    # class 0: tp 2 fp 2 fn 0 -> 4/6; class 1: tp 1 fp 0 fn 2 -> 2/4; class 2: tp 1 -> 1
    assert f1_macro(pred, label) == approx((4 / 6 + 2 / 4 + 1.0) / 3)
    # a class only ever predicted counts, with F1 0: classes 0 (1.0), 1 (0.0), 3 (0.0)
    assert f1_macro(np.array([0, 3]), np.array([0, 1])) == approx(1 / 3)


def test_pearson():
    # dx = [-1.5,-.5,.5,1.5], dy = [-3,-1,0,4]: sum dx dy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert pearson(np.array([1, 2, 3, 4]), np.array([2, 4, 5, 9])) == approx(11 / math.sqrt(5 * 26))
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == approx(-1.0)
    assert pearson(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0  # constant prediction
    assert pearson(np.array([1.0]), np.array([2.0])) == 0.0  # one point


def test_spearman_ranks_ties_by_their_mean_rank():
    # (replaces the test of the hand-written average_ranks, now SciPy's job)
    # pred [3,1,3,2,3]: the three 3s share ranks 3,4,5 -> 4 each: ranks [4,1,4,2,4]; label ranks [1..5]
    # both have mean 3; deviations [1,-2,1,-1,1] and [-2,-1,0,1,2]: products -2+2+0-1+2 = 1,
    # sums of squares 8 and 10  ->  1/sqrt(80)  (ordinal ranks [3,1,4,2,5] would give 5/10 = 0.5)
    assert spearman(np.array([3, 1, 3, 2, 3]), np.array([1, 2, 3, 4, 5])) == approx(1 / math.sqrt(80))
    # ties in the labels: pred ranks [2,1,3], label [2,2,1] ranks [2.5,2.5,1]; means 2 and 2;
    # deviations [0,-1,1] and [.5,.5,-1]: products -1.5, sums of squares 2 and 1.5
    assert spearman(np.array([0.5, 0.1, 0.9]), np.array([2, 2, 1])) == approx(-1.5 / math.sqrt(2 * 1.5))
    # all tied: a constant ranking carries no correlation
    assert spearman(np.array([7, 7]), np.array([1, 2])) == 0.0


def test_spearman_with_ties():
    # ranks of pred: [1, 2.5, 2.5, 4, 5]; of label: [1, 3, 2, 5, 4]; both have mean 3
    # deviations [-2,-.5,-.5,1,2] and [-2,0,-1,2,1]: sum products 8.5, sums of squares 9.5 and 10
    pred = np.array([10, 20, 20, 30, 40])
    label = np.array([1, 3, 2, 5, 4])
    assert spearman(pred, label) == approx(8.5 / math.sqrt(9.5 * 10))
    # monotone but non-linear: spearman 1, pearson below 1
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x**3) == approx(1.0)
    assert pearson(x, x**3) < 0.99


def test_mse():
    assert mse(np.array([1, 2, 4]), np.array([1, 3, 2])) == approx(5 / 3)
    assert mse(np.array([0.5]), np.array([0.5])) == 0.0


def test_score_registry():
    assert set(SCORE_METRICS) == {"accuracy", "f1", "f1_macro", "pearson", "spearman", "mse"}
    assert all(isinstance(SCORE_METRICS[name], ScoreMetric) for name in SCORE_METRICS)
    tasks = {name: SCORE_METRICS[name].task for name in SCORE_METRICS}
    assert tasks == {
        "accuracy": "classification",
        "f1": "classification",
        "f1_macro": "classification",
        "pearson": "regression",
        "spearman": "regression",
        "mse": "regression",
    }
    assert [n for n in SCORE_METRICS if not SCORE_METRICS[n].higher_is_better] == ["mse"]
    assert SCORE_METRICS["f1"].fn is f1_binary
    assert SCORE_METRICS["spearman"].fn is spearman
    assert default_metric("classification") == "accuracy"
    assert default_metric("regression") == "pearson"
    with pytest.raises(KeyError, match="accuracy"):
        SCORE_METRICS["acc"]
