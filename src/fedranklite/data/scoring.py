"""Evaluation scores by name (`evaluation.metric`), computed with scikit-learn and SciPy."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from fedranklite.core.registry import Registry


@dataclass(frozen=True)
class ScoreMetric:
    name: str
    task: str  # "classification", "regression" or "any"
    fn: Callable[[np.ndarray, np.ndarray], float]  # (predictions, labels) -> score
    higher_is_better: bool = True


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    return float(skm.accuracy_score(label, pred)) if len(label) else float("nan")


def f1_binary(pred: np.ndarray, label: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC/QQP; 0 when nothing is positive."""
    return float(skm.f1_score(np.asarray(label) == 1, np.asarray(pred) == 1, zero_division=0.0))


def f1_macro(pred: np.ndarray, label: np.ndarray) -> float:
    """Mean F1 over every class that occurs in the predictions or the labels."""
    classes = np.union1d(pred, label)
    return float(skm.f1_score(label, pred, labels=classes, average="macro", zero_division=0.0))


def _correlation(fn, pred: np.ndarray, label: np.ndarray) -> float:
    pred, label = np.asarray(pred, dtype=np.float64), np.asarray(label, dtype=np.float64)
    if pred.size < 2 or pred.std() == 0 or label.std() == 0:
        return 0.0  # a constant predictor carries no correlation (SciPy would return NaN and warn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(fn(pred, label)[0])


def pearson(pred: np.ndarray, label: np.ndarray) -> float:
    return _correlation(stats.pearsonr, pred, label)


def spearman(pred: np.ndarray, label: np.ndarray) -> float:
    return _correlation(stats.spearmanr, pred, label)


def mse(pred: np.ndarray, label: np.ndarray) -> float:
    return float(skm.mean_squared_error(np.asarray(label, dtype=np.float64), np.asarray(pred, dtype=np.float64)))


def binary_f1_problem(metric: Optional[str], num_classes: Optional[int]) -> Optional[str]:
    """Why `metric` cannot score a task of `num_classes` classes (None: it can): `f1` is binary F1 of class 1."""
    if metric == "f1" and num_classes is not None and num_classes > 2:
        return f"f1 is binary F1 (of class 1) and this task has {num_classes} classes; use f1_macro (or accuracy)"
    return None


SCORE_METRICS: Registry[ScoreMetric] = Registry("evaluation metric")
for _m in (
    ScoreMetric("accuracy", "classification", accuracy),
    ScoreMetric("f1", "classification", f1_binary),
    ScoreMetric("f1_macro", "classification", f1_macro),
    ScoreMetric("pearson", "regression", pearson),
    ScoreMetric("spearman", "regression", spearman),
    ScoreMetric("mse", "regression", mse, False),
):
    SCORE_METRICS.register(_m.name)(_m)


def default_metric(task: str) -> str:
    return "pearson" if task == "regression" else "accuracy"


def trivial_baseline(
    eval_labels: np.ndarray,
    metric: str,
    regression: bool,
    extra_metrics: Sequence[str] = (),
    label_names: Optional[Sequence[str]] = None,
) -> dict:
    """The best score of a prediction that ignores the input: the best single class for every row
    (classification: the majority class for accuracy, all-positive for F1) or the evaluation rows' mean
    (regression; a constant has no correlation, so pearson and spearman score it 0). Chosen on the
    evaluation rows, so it is the strongest such bar: a run's score means something only above it.
    `extra_metrics` are scored for the same constant prediction (keyed by name)."""
    labels = np.asarray(eval_labels)
    fn, higher = SCORE_METRICS[metric].fn, SCORE_METRICS[metric].higher_is_better
    if regression:
        value = float(labels.astype(np.float64).mean()) if labels.size else 0.0
        pred, predictor = np.full(len(labels), value), f"constant {value:.4g} (mean label)"
    else:
        scored = [
            (fn(np.full(len(labels), c, dtype=np.int64), labels), int(c)) for c in np.unique(labels.astype(np.int64))
        ]
        if not scored:
            return {"predictor": "none (no evaluation rows)", "metric": metric, "score": None}
        best = (max(scored) if higher else min(scored))[1]
        name = f" ({label_names[best]!r})" if label_names is not None and best < len(label_names) else ""
        pred, predictor = np.full(len(labels), best, dtype=np.int64), f"class {best}{name} for every row"
    out = {"predictor": predictor, "metric": metric, "score": fn(pred, labels)}
    for extra in extra_metrics:
        if (
            extra != metric
            and extra in SCORE_METRICS
            and SCORE_METRICS[extra].task in ("any", "regression" if regression else "classification")
        ):
            out[extra] = SCORE_METRICS[extra].fn(pred, labels)
    return out
