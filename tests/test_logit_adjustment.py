"""Logit-adjusted local training (`training.logit_adjustment`): the smoothed label prior, the adjusted loss, its
effect on a client's local steps (the tiny random model): nothing changes with a balanced prior, a skewed client's
head moves less towards its majority class, tau = 0 never touches the path; the Flower client side reads it; bad
values and combinations are refused in one line."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_same_training, local_client, tiny_tree

from fedranklite.federation.logit_adjustment import adjusted, label_log_prior
from fedranklite.run import client as client_mod
from fedranklite.run.client import TrainSettings
from fedranklite.run.engine import build_engine


def test_the_prior_is_the_smoothed_label_frequency_and_a_missing_class_gets_a_finite_offset():
    prior = label_log_prior([0, 0, 0, 1], 3).exp()
    torch.testing.assert_close(prior, torch.tensor([4 / 7, 2 / 7, 1 / 7]))
    assert math.isclose(float(prior.sum()), 1.0, rel_tol=1e-6)
    assert torch.isfinite(label_log_prior([1, 1], 2)).all()  # class 0 absent: log(1/4), not -inf
    torch.testing.assert_close(label_log_prior([], 2).exp(), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("labels, classes", [([0, 2], 2), ([-1, 0], 2), ([0], 0)])
def test_labels_outside_the_classes_are_refused(labels, classes):
    with pytest.raises(ValueError):
        label_log_prior(labels, classes)


def test_the_adjusted_logits_shift_each_class_by_tau_log_prior_and_a_balanced_prior_changes_no_loss():
    logits = torch.randn(5, 3)
    log_prior = label_log_prior([0, 0, 1, 2, 2, 2], 3)
    torch.testing.assert_close(adjusted(logits, log_prior, 0.5), logits + 0.5 * log_prior)
    labels = torch.tensor([0, 1, 2, 2, 0])
    balanced = label_log_prior([0, 1, 2], 3)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(ce(adjusted(logits, balanced, 1.0), labels), ce(logits, labels))
    with pytest.raises(ValueError, match="3 logits per row but a prior over 2 classes"):
        adjusted(logits, label_log_prior([0, 1], 2), 1.0)


# ---- through a client's local training (tiny random model)
def _client(tiny_config, **training):
    return local_client(tiny_config, **{"optimizer": "sgd", "grad_clip": None, "head_lr": None, "lr": 0.05, **training})


def test_a_client_with_balanced_labels_trains_exactly_as_without_the_adjustment(tiny_config):
    engine, prep, train = _client(tiny_config)
    labels = np.asarray(prep.train.labels)
    per_class = min(int((labels == c).sum()) for c in np.unique(labels))
    assert per_class >= 4
    rows = np.concatenate([np.flatnonzero(labels == c)[:4] for c in np.unique(labels)])
    plain = train(dataclasses.replace(prep.settings, max_local_steps=3, batch_size=4), rows)
    adj = train(dataclasses.replace(prep.settings, max_local_steps=3, batch_size=4, logit_adjustment=1.0), rows)
    for name, tensor in plain.update.items():
        torch.testing.assert_close(adj.update[name], tensor, rtol=1e-5, atol=1e-6)


def test_a_skewed_client_pushes_its_majority_class_less_and_reports_its_plain_loss(tiny_config):
    engine, prep, train = _client(tiny_config)
    labels = np.asarray(prep.train.labels)
    classes = np.unique(labels)
    major, minor = int(classes[0]), int(classes[1])
    rows = np.concatenate([np.flatnonzero(labels == major)[:30], np.flatnonzero(labels == minor)[:2]])
    settings = dataclasses.replace(prep.settings, max_local_steps=6, batch_size=8)
    plain = train(settings, rows)
    adj = train(dataclasses.replace(settings, logit_adjustment=1.0), rows)
    start = engine.state.global_state
    names = [k for k in plain.update if "head" in k or "classifier" in k]
    assert names, sorted(plain.update)
    bias = [k for k in names if k.endswith("bias")]
    assert bias, names
    b0 = start[bias[0]]
    gap = lambda b: float((b - b0)[major] - (b - b0)[minor])  # noqa: E731  how far the majority class gained
    assert gap(plain.update[bias[0]]) > 0  # without adjustment the head's bias moves towards the majority class
    assert gap(adj.update[bias[0]]) < gap(plain.update[bias[0]])
    # the first batch's loss is computed at the same weights: the client reports the task loss, not the adjusted one
    assert adj.loss_before == pytest.approx(plain.loss_before, rel=1e-6)


def test_tau_zero_never_computes_a_prior_and_trains_exactly_as_without_it(tiny_config, monkeypatch):
    engine, prep, train = _client(tiny_config, optimizer="adamw")
    assert prep.settings.logit_adjustment == 0.0
    reference = train(prep.settings)

    def forbidden(*_a, **_k):
        raise AssertionError("the logit adjustment was computed with logit_adjustment 0")

    monkeypatch.setattr(client_mod, "label_log_prior", forbidden)
    monkeypatch.setattr(client_mod, "adjusted", forbidden)
    assert_same_training(reference, train(prep.settings))


def test_a_regression_client_refuses_it(tiny_config):
    engine, prep, train = _client(tiny_config)
    with pytest.raises(ValueError, match="classification"):
        train(dataclasses.replace(prep.settings, logit_adjustment=1.0, regression=True))


def test_tau_reaches_the_settings_of_the_local_runner_and_of_the_flower_client_side(tiny_config):
    pytest.importorskip("flwr")
    from fedranklite.backends.flower.task import client_side, config_json

    cfg = tiny_config(training={"logit_adjustment": 0.5})
    assert TrainSettings.from_config(cfg, False).logit_adjustment == 0.5
    assert build_engine(cfg).prepared.settings.logit_adjustment == 0.5
    assert client_side(config_json(cfg)).settings.logit_adjustment == 0.5


# ---- bad values and combinations
@pytest.mark.parametrize(
    "sets, key",
    [
        (["training.logit_adjustment=-1"], "training.logit_adjustment"),
        (["training.logit_adjustment=.nan"], "training.logit_adjustment"),
        (["training.logit_adjustment=11"], "training.logit_adjustment"),
    ],
)
def test_a_bad_tau_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch, sets, key):
    import fedranklite.run.engine as engine_mod
    from fedranklite.cli import main as cli

    monkeypatch.setattr(engine_mod, "build_engine", lambda *a, **k: pytest.fail("a bad config reached the engine"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    args = ["run", "--config", str(path)]
    for s in sets:
        args += ["--set", s]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_with_a_regression_task_or_the_surrogate_backend_it_is_refused_naming_the_key(tiny_config):
    from fedranklite.config.schema import ConfigError

    with pytest.raises(ConfigError, match="training.logit_adjustment: needs a classification task"):
        tiny_config(training={"logit_adjustment": 1.0}, data={"task": "regression", "num_labels": 1})
    with pytest.raises(ConfigError, match="training.logit_adjustment: the surrogate backend does not model it"):
        tiny_config(training={"logit_adjustment": 1.0}, engine={"backend": "surrogate"})
    tiny_config(training={"logit_adjustment": 1.0})  # a classification task on the local backend: accepted
