"""`training.freeze_head` (FedBABU): a client trains the LoRA factors only and sends the head back exactly as it
received it; off, the head trains as before (bit-identical path); the Flower client side reads it; the surrogate
refuses it in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import assert_same_training, local_client

from fedranklite.run.client import TrainSettings
from fedranklite.run.engine import build_engine


def _client(tiny_config, **training):
    return local_client(tiny_config, **{"head_lr": 0.05, "lr": 0.05, **training})


def _is_head(engine, name: str) -> bool:
    head = {id(p) for p in engine.model.head.parameters()}
    return id(dict(engine.model.named_parameters())[name]) in head


def test_a_frozen_head_comes_back_as_received_while_the_lora_factors_train(tiny_config):
    engine, prep, train = _client(tiny_config)
    start = {k: v.clone() for k, v in engine.state.global_state.items()}
    trained = train(dataclasses.replace(prep.settings, max_local_steps=3))
    frozen = train(dataclasses.replace(prep.settings, max_local_steps=3, freeze_head=True))
    heads = [k for k in frozen.update if _is_head(engine, k)]
    loras = [k for k in frozen.update if "lora_B" in k]
    assert heads and loras
    for k in heads:
        assert torch.equal(frozen.update[k], start[k]), k
        assert not torch.equal(trained.update[k], start[k]), k  # without it the head moves
    assert any((frozen.update[k] - start[k][..., : frozen.update[k].shape[-1]]).abs().max() > 0 for k in loras)
    assert frozen.steps == trained.steps == 3


def test_off_it_trains_exactly_as_before(tiny_config):
    engine, prep, train = _client(tiny_config)
    assert prep.settings.freeze_head is False
    assert_same_training(train(prep.settings), train(dataclasses.replace(prep.settings, freeze_head=False)))


def test_it_reaches_the_local_runner_and_the_flower_client_side(tiny_config):
    pytest.importorskip("flwr")
    from fedranklite.backends.flower.task import client_side, config_json

    cfg = tiny_config(training={"freeze_head": True})
    assert TrainSettings.from_config(cfg, False).freeze_head is True
    assert build_engine(cfg).prepared.settings.freeze_head is True
    assert client_side(config_json(cfg)).settings.freeze_head is True


def test_the_surrogate_backend_refuses_it(tiny_config):
    from fedranklite.config.schema import ConfigError

    with pytest.raises(ConfigError, match="training.freeze_head: the surrogate backend does not model it"):
        tiny_config(training={"freeze_head": True}, engine={"backend": "surrogate"})


def test_a_frozen_head_leaves_no_gradient_behind_and_a_frozen_siamese_head_is_refused(tiny_config, tmp_path):
    engine, prep, train = _client(tiny_config)
    train(dataclasses.replace(prep.settings, max_local_steps=2, freeze_head=True))
    assert all(p.grad is None for p in engine.model.head.parameters())  # nothing accumulates across steps

    from fedranklite.model.backbones import ModelError
    from fedranklite.model.fedmodel import build_model

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b,label\n" + "".join(f"left {i},right {i},{i % 2}\n" for i in range(40)))
    cfg = tiny_config(
        training={"freeze_head": True},
        model={"pair_encoding": "siamese"},
        data={"source": "files", "train_file": str(pairs), "text_columns": ["a", "b"]},
    )
    with pytest.raises(ModelError, match="training.freeze_head: this pair task uses the siamese pair head"):
        build_model(cfg, 2)
    assert build_model(tiny_config(model={"pair_encoding": "siamese"}, data=cfg.data.model_dump()), 2).siamese


@pytest.mark.parametrize(
    "setting, key",
    [
        ("training.freeze_head=maybe", "training.freeze_head"),
        ("federation.scheduler.skip_hopeless=maybe", "federation.scheduler.skip_hopeless"),
    ],
)
def test_a_bad_new_switch_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch, setting, key):
    import yaml
    from conftest import tiny_tree

    import fedranklite.run.engine as engine_mod
    from fedranklite.cli import main as cli

    monkeypatch.setattr(engine_mod, "build_engine", lambda *a, **k: pytest.fail("a bad config reached the engine"))
    tree = tiny_tree(tmp_path, federation={"scheduler": {"type": "uniform"}}, deadline={"seconds": 5.0})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    code = cli.main(["run", "--config", str(path), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
