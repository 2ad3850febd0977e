"""The trivial baseline every summary prints, the collapse warning, and the free loss telemetry."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from fedranklite.cli.main import print_summary
from fedranklite.data.scoring import trivial_baseline
from fedranklite.run.client import TrainSettings, train_client
from fedranklite.run.engine import build_engine
from fedranklite.run.summary import run_warnings


def test_trivial_baseline_accuracy_is_the_majority_rate():
    labels = np.array([0, 1, 1, 1, 0, 1, 2, 1])
    base = trivial_baseline(labels, "accuracy", regression=False)
    assert base["score"] == pytest.approx(5 / 8) and base["predictor"] == "class 1 for every row"


def test_trivial_baseline_f1_is_all_positive():
    labels = np.array([1, 0, 0, 0, 1])  # all-positive: precision 2/5, recall 1 -> F1 = 2*0.4/1.4
    base = trivial_baseline(labels, "f1", regression=False)
    assert base["score"] == pytest.approx(0.8 / 1.4) and base["predictor"] == "class 1 for every row"


def test_trivial_baseline_regression_is_the_mean():
    labels = np.array([1.0, 2.0, 3.0, 6.0])
    assert trivial_baseline(labels, "pearson", regression=True)["score"] == 0.0
    mse = trivial_baseline(labels, "mse", regression=True)
    assert mse["score"] == pytest.approx(np.var(labels)) and "constant 3" in mse["predictor"]


def test_run_warnings():
    base = {"predictor": "class 1 for every row", "score": 0.55}
    assert run_warnings({"predicted_classes": 2}, 0.7, base) == []
    collapsed = run_warnings({"predicted_classes": 1}, 0.55, base)
    assert len(collapsed) == 2 and "single class" in collapsed[0] and "not better than" in collapsed[1]
    assert run_warnings({}, 0.5, {"predictor": "x", "score": 0.4}, higher_is_better=False)[0].startswith("the final")
    assert run_warnings(None, None, None) == []


def test_a_collapsed_run_records_and_prints_the_warning(tiny_config):
    cfg = tiny_config(federation={"num_rounds": 1})
    engine = build_engine(cfg)
    baseline = engine.model_info["trivial_baseline"]
    labels = engine.prepared.eval.labels
    assert baseline["score"] == pytest.approx(np.bincount(labels).max() / len(labels))
    # the global model answers one class for every row: the evaluator is what a collapsed model would give
    engine.evaluator = lambda state: {"score": baseline["score"], "loss": 0.7, "predicted_classes": 1}
    summary = engine.run()
    on_disk = json.loads((cfg.results_dir / "metrics.json").read_text())
    assert on_disk["trivial_baseline"] == baseline
    assert any("single class" in w for w in on_disk["warnings"])
    out = io.StringIO()
    print_summary(Console(file=out, width=200), summary, cfg.results_dir)
    text = out.getvalue()
    assert "trivial baseline: class" in text and "warning" in text and "single class" in text


def test_a_run_that_learns_has_no_warning_and_reports_predicted_classes(tiny_config):
    cfg = tiny_config(federation={"num_rounds": 1})
    engine = build_engine(cfg)
    summary = engine.run()
    final = summary.run["final_eval"]
    assert final["predicted_classes"] >= 1
    assert ("single class" in " ".join(summary.run["warnings"])) == (final["predicted_classes"] == 1)


def test_training_losses_give_the_telemetry_without_a_probe(tiny_config):
    cfg = tiny_config()
    engine = build_engine(cfg)
    prep = engine.prepared
    settings = TrainSettings(max_local_steps=6, batch_size=8, lr=0.005, probe_samples=0)
    rows = prep.partitions[0]
    res = train_client(prep.model, engine.state.global_state, 0, 4, prep.train, rows, settings, prep.device, seed=1)
    assert res.steps == 6
    # RMS of the batch losses lies between the smallest and largest batch loss, so near both ends' means
    assert np.isfinite(res.loss_rms) and res.loss_rms > 0
    assert np.isfinite(res.loss_before) and np.isfinite(res.loss_after)
    assert min(res.loss_before, res.loss_after) * 0.5 < res.loss_rms < max(res.loss_before, res.loss_after) * 2


def test_the_default_is_free_telemetry():
    assert TrainSettings().probe_samples == 0
    from fedranklite.config.files import load_config

    assert load_config("configs/base.yaml").training.probe_samples == 0


@pytest.mark.parametrize(
    "losses, before, after",
    [
        ([1.0, 0.8, 0.6, 0.4], 0.9, 0.5),  # 4 steps: first 2 vs last 2, never the same batches
        ([1.0, 0.5], 1.0, 0.5),
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 0.85, 0.25),  # windows of 4
        ([1.0, 0.8, 0.6, 0.4, 0.2], 0.9, 0.3),  # 5 steps: 2 and 2, the middle batch in neither
    ],
)
def test_loss_ends_use_disjoint_windows(losses, before, after):
    from fedranklite.run.client import loss_ends

    got = loss_ends(losses)
    assert got == pytest.approx((before, after))
    assert got[0] - got[1] > 0  # a falling loss is a positive drop


def test_loss_ends_of_one_step_are_unknown():
    from fedranklite.run.client import loss_ends

    before, after = loss_ends([0.7])  # one step: a level for fairness, no drop for the scheduler
    assert before == 0.7 and np.isnan(after)
    assert all(np.isnan(v) for v in loss_ends([]))


def test_four_step_rounds_report_a_non_zero_loss_drop(tiny_config):
    # the headline experiment trains 4 steps per round: the drop must not be the difference of identical windows
    cfg = tiny_config(training={"max_local_steps": 4, "probe_samples": 0}, federation={"num_rounds": 1})
    engine = build_engine(cfg)
    engine.run()
    drops = [c.loss_drop for c in engine.state.records[0].clients if c.steps == 4]
    assert drops and all(d is not None and d != 0.0 for d in drops)
