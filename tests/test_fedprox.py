"""FedProx (`training.proximal_mu`): the proximal term's value and gradient, its effect on a client's local steps
(the tiny random model), mu = 0 leaving the local step untouched, the Flower client side reading it, and bad
values refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from conftest import assert_same_training, local_client, tiny_tree

from fedranklite.federation.proximal import anchors, proximal_term
from fedranklite.federation.ranks import truncate
from fedranklite.run import client as client_mod
from fedranklite.run.client import TrainSettings
from fedranklite.run.engine import build_engine


def test_the_term_is_half_mu_times_the_squared_distance_and_its_gradient_is_mu_times_the_distance():
    torch.manual_seed(0)
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    start = [p.detach() + 0.1 * torch.randn_like(p) for p in params]
    mu = 0.37
    term = proximal_term(params, start, mu)
    want = 0.5 * mu * sum(float((p.detach() - s).square().sum()) for p, s in zip(params, start))
    assert term.item() == pytest.approx(want, rel=1e-6)

    # gradient of (a task loss + the term) = the task loss's gradient + mu * (w - w0)
    weights = [torch.randn_like(p) for p in params]
    task = lambda: sum((w * p.sin()).sum() for w, p in zip(weights, params))  # noqa: E731
    plain = torch.autograd.grad(task(), params)
    both = torch.autograd.grad(task() + proximal_term(params, start, mu), params)
    for g_plain, g_both, p, s in zip(plain, both, params, start):
        torch.testing.assert_close(g_both, g_plain + mu * (p.detach() - s), rtol=1e-6, atol=1e-7)


def test_the_term_is_zero_with_a_zero_gradient_at_the_anchor_and_anchors_are_detached_copies():
    params = [torch.randn(3, 2, requires_grad=True)]
    start = anchors(params)
    assert not start[0].requires_grad and start[0].data_ptr() != params[0].data_ptr()
    term = proximal_term(params, start, 5.0)
    (grad,) = torch.autograd.grad(term, params)
    assert term.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    with torch.no_grad():
        params[0].add_(1.0)
    assert torch.equal(start[0] + 1.0, params[0].detach())  # the anchor did not move with the parameter


# ---- through a client's local training (tiny random model)
def _client(tiny_config, **training):
    engine, prep, train = local_client(
        tiny_config, **{"optimizer": "sgd", "grad_clip": None, "head_lr": None, "lr": 0.05, **training}
    )
    return engine, prep.settings, train


def test_a_local_step_with_mu_moves_by_minus_lr_mu_times_the_distance_more(tiny_config):
    """Plain SGD, two local steps from the same start with the same batches and dropout: the first step is the same
    (w = w0, the term's gradient is 0); the second step's gradient gains mu * (w1 - w0), so the two results differ
    by exactly -lr * mu * (w1 - w0)."""
    engine, settings, train = _client(tiny_config)
    w0 = {k: v.clone() for k, v in engine.state.global_state.items()}
    lr, mu = 0.05, 0.7
    one = train(dataclasses.replace(settings, max_local_steps=1))
    plain = train(dataclasses.replace(settings, max_local_steps=2))
    prox = train(dataclasses.replace(settings, max_local_steps=2, proximal_mu=mu))
    assert plain.steps == prox.steps == 2
    start = truncate(w0, 4)  # what the rank-4 client received
    for name, w1 in one.update.items():
        want = -lr * mu * (w1 - start[name])
        torch.testing.assert_close(prox.update[name] - plain.update[name], want, rtol=1e-4, atol=1e-7)
        if "lora_A" not in name:  # (A gets no gradient while B is still 0 at step 1)
            assert (w1 - start[name]).abs().max() > 0, name  # so the check above is not 0 == 0
    # both batch losses are computed before their step at the same weights (w0, then w1): the client reports its
    # task loss, not the task loss plus the term (which is > 0 at w1)
    assert prox.loss_rms == plain.loss_rms


def test_mu_zero_never_computes_the_term_and_trains_exactly_as_without_it(tiny_config, monkeypatch):
    engine, settings, train = _client(tiny_config, optimizer="adamw")
    assert settings.proximal_mu == 0.0
    reference = train(settings)

    def forbidden(*_a, **_k):
        raise AssertionError("the proximal term was computed with proximal_mu 0")

    monkeypatch.setattr(client_mod, "proximal_term", forbidden)
    monkeypatch.setattr(client_mod, "anchors", forbidden)
    assert_same_training(reference, train(settings))


def test_mu_reaches_the_settings_of_the_local_runner_and_of_the_flower_client_side(tiny_config):
    pytest.importorskip("flwr")
    from fedranklite.backends.flower.task import client_side, config_json

    cfg = tiny_config(training={"proximal_mu": 0.25})
    assert TrainSettings.from_config(cfg, False).proximal_mu == 0.25
    assert build_engine(cfg).prepared.settings.proximal_mu == 0.25  # what LocalRunner trains with
    # the Flower ClientApp trains with the resident side's settings (client_app.train -> train_client)
    assert client_side(config_json(cfg)).settings.proximal_mu == 0.25


# ---- bad values
@pytest.mark.parametrize("value", ["-0.1", ".inf", "true"])
def test_a_bad_mu_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch, value):
    import fedranklite.run.engine as engine_mod
    from fedranklite.cli import main as cli

    monkeypatch.setattr(engine_mod, "build_engine", lambda *a, **k: pytest.fail("a bad config reached the engine"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    code = cli.main(["run", "--config", str(path), "--set", f"training.proximal_mu={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "training.proximal_mu" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
