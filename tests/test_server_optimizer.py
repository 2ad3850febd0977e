"""The server optimizer (`federation.server_optimizer`): FedAvgM and FedAdam against hand-computed values, momentum 0
with lr 1 equal to plain aggregation bit for bit (alone and through the engine), its state across a resume, the
checkpoint of a run without one unchanged, and bad values refused in one line."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.federation.aggregation import AGGREGATORS, Contribution
from fedranklite.federation.server_optimizer import (
    SERVER_OPTIMIZERS,
    NoServerOptimizer,
    ServerAdam,
    ServerMomentum,
)
from fedranklite.run.checkpoint import (
    CHECKPOINT_NAME,
    RNG_TENSOR,
    STATE_PREFIX,
    digest,
    encode_payload,
    load_checkpoint,
    save_checkpoint,
)
from fedranklite.run.engine import build_engine

A = "m.query.lora_A.default.weight"  # (r_max, in) = (4, 3)
B = "m.query.lora_B.default.weight"  # (out, r_max) = (2, 4)
H = "head.weight"


def random_round(seed: int, global_state: dict) -> list[Contribution]:
    """Three clients at ranks 1, 2 and 4 around `global_state`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for rank, weight in ((1, 1.0), (2, 3.0), (4, 2.0)):
        state = {
            A: global_state[A][:rank] + 0.1 * torch.randn(rank, 3, generator=g),
            B: global_state[B][:, :rank] + 0.1 * torch.randn(2, rank, generator=g),
            H: global_state[H] + 0.1 * torch.randn(2, generator=g),
        }
        out.append(Contribution(state, rank, weight))
    return out


def start_state() -> dict:
    g = torch.Generator().manual_seed(7)
    return {A: torch.randn(4, 3, generator=g), B: torch.randn(2, 4, generator=g), H: torch.randn(2, generator=g)}


# ---- the math
@pytest.mark.parametrize("aggregation", ["fedavg", "blockwise", "hetlora", "median"])
def test_momentum_zero_with_lr_one_is_the_aggregate_bit_for_bit(aggregation):
    aggregate = AGGREGATORS[aggregation]
    plain, server = start_state(), start_state()
    opt = ServerMomentum(lr=1.0, momentum=0.0)
    for r in range(4):  # over several rounds: the velocity buffer is in use after the first
        plain = aggregate(plain, random_round(r, plain))
        server = opt.step(server, aggregate(server, random_round(r, server)))
        for name in plain:
            assert server[name].dtype == plain[name].dtype
            assert torch.equal(server[name], plain[name]), (aggregation, r, name)
    assert set(opt.state_dict()) == {f"velocity/{n}" for n in plain}


def test_none_hands_back_the_aggregate_object_itself():
    aggregate = AGGREGATORS["fedavg"](start_state(), random_round(0, start_state()))
    opt = SERVER_OPTIMIZERS.build(SERVER_OPTIMIZERS.parse("none"))
    assert isinstance(opt, NoServerOptimizer)
    assert opt.step(start_state(), aggregate) is aggregate and opt.state_dict() == {}


def test_momentum_hand_computed_over_two_rounds():
    opt = ServerMomentum(lr=0.5, momentum=0.9)
    x = {H: torch.tensor([1.0, -2.0])}
    # round 1: delta = [2, 1], v = [2, 1], x = x + 0.5 v = [2, -1.5]
    x = opt.step(x, {H: torch.tensor([3.0, -1.0])})
    assert torch.allclose(x[H], torch.tensor([2.0, -1.5]))
    # round 2: delta = [0.5, -0.5], v = 0.9 [2, 1] + delta = [2.3, 0.4], x = [2, -1.5] + 0.5 v = [3.15, -1.3]
    x = opt.step(x, {H: torch.tensor([2.5, -2.0])})
    assert torch.allclose(x[H], torch.tensor([3.15, -1.3]))
    assert torch.allclose(opt.state_dict()[f"velocity/{H}"], torch.tensor([2.3, 0.4], dtype=torch.float64))


def test_adam_hand_computed_over_two_rounds():
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 1e-3
    opt = ServerAdam(lr=lr, beta1=b1, beta2=b2, eps=eps)
    x = opt.step({H: torch.tensor([0.0])}, {H: torch.tensor([0.1])})
    m1, v1 = 0.1 * 0.1, 0.01 * 0.1**2  # (1 - b1) delta, (1 - b2) delta^2
    x1 = lr * m1 / (v1**0.5 + eps)  # 0.01 * 0.01 / 0.011
    assert x[H].item() == pytest.approx(x1, rel=1e-6)
    x = opt.step(x, {H: torch.tensor([x1 - 0.2])})  # delta = -0.2
    m2, v2 = b1 * m1 + (1 - b1) * -0.2, b2 * v1 + (1 - b2) * 0.04
    assert x[H].item() == pytest.approx(x1 + lr * m2 / (v2**0.5 + eps), rel=1e-6)
    assert set(opt.state_dict()) == {f"m/{H}", f"v/{H}"}


def test_under_fedavg_a_rank_slice_nobody_trained_stays_zero_with_momentum():
    """Slices 2-3 of the global adapter are zero and this round's clients have ranks 1 and 2: fedavg's zero padding
    leaves them zero, so their pseudo-gradient and velocity are zero and they stay exactly zero."""
    g = start_state()
    g[A][2:] = 0.0
    g[B][:, 2:] = 0.0
    opt = ServerMomentum(lr=1.0, momentum=0.9)
    for r in range(3):
        contributions = [c for c in random_round(r, g) if c.rank <= 2]
        g = opt.step(g, AGGREGATORS["fedavg"](g, contributions))
        assert torch.equal(g[A][2:], torch.zeros(2, 3)) and torch.equal(g[B][:, 2:], torch.zeros(2, 2))


def test_a_saved_state_is_checked_against_the_adapter():
    opt = ServerMomentum()
    like = start_state()
    opt.step(like, AGGREGATORS["fedavg"](like, random_round(0, like)))
    fresh = ServerMomentum()
    fresh.load_state_dict(opt.state_dict(), like)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), opt.state_dict().values()))
    with pytest.raises(ValueError, match="not a buffer"):
        ServerMomentum().load_state_dict({f"m/{H}": torch.zeros(2, dtype=torch.float64)}, like)
    with pytest.raises(ValueError, match="shape"):
        ServerMomentum().load_state_dict({f"velocity/{H}": torch.zeros(3, dtype=torch.float64)}, like)
    with pytest.raises(ValueError, match="NaN"):
        nan = torch.tensor([0.0, float("nan")], dtype=torch.float64)
        ServerMomentum().load_state_dict({f"velocity/{H}": nan}, like)


# ---- through the engine (tiny random model)
FEDAVG = {"aggregation": "fedavg", "num_rounds": 3}


def test_an_engine_with_momentum_zero_and_lr_one_runs_exactly_as_without_a_server_optimizer(tiny_config):
    plain = build_engine(tiny_config(experiment_name="plain", federation=FEDAVG))
    plain.run()
    server = build_engine(
        tiny_config(
            experiment_name="server",
            federation={**FEDAVG, "server_optimizer": {"type": "momentum", "lr": 1.0, "momentum": 0.0}},
        )
    )
    server.run()
    for name, tensor in plain.state.global_state.items():
        assert torch.equal(tensor, server.state.global_state[name]), name
    assert [r.score for r in plain.state.records] == [r.score for r in server.state.records]


def test_momentum_moves_the_adapter_and_its_state_survives_a_resume_bit_identically(tiny_config):
    from fedranklite.core.results_io import rewrite_round_log

    fed = {**FEDAVG, "server_optimizer": {"type": "momentum", "lr": 1.0, "momentum": 0.9}}
    cfg = tiny_config(federation=fed)
    full = build_engine(cfg)
    full.run()
    reference = build_engine(tiny_config(experiment_name="plain", federation=FEDAVG))
    reference.run()
    assert any(not torch.equal(t, reference.state.global_state[n]) for n, t in full.state.global_state.items())

    # the same run killed after round 1: one round, its checkpoint, then --resume in a fresh engine
    partial = build_engine(cfg)
    record = partial.run_round()
    save_checkpoint(cfg.results_dir / CHECKPOINT_NAME, partial.checkpoint_payload())
    rewrite_round_log(cfg.results_dir / "rounds.jsonl", [record])
    saved = load_checkpoint(cfg.results_dir / CHECKPOINT_NAME)
    assert set(saved["server_optimizer"]) == {f"velocity/{n}" for n in full.state.global_state}
    assert any(bool(t.abs().max() > 0) for t in saved["server_optimizer"].values())
    resumed = build_engine(cfg)
    resumed.run(resume=True)
    for name, tensor in full.state.global_state.items():
        assert torch.equal(tensor, resumed.state.global_state[name]), name
    for key, tensor in full.server_optimizer.state_dict().items():
        assert torch.equal(tensor, resumed.server_optimizer.state_dict()[key]), key
    assert [r.score for r in full.state.records] == [r.score for r in resumed.state.records]


def test_a_run_without_a_server_optimizer_writes_the_checkpoint_of_earlier_versions(tiny_config):
    engine = build_engine(tiny_config(federation={"num_rounds": 1}))
    engine.run()
    payload = engine.checkpoint_payload()
    assert payload["server_optimizer"] == {}
    tensors, metadata = encode_payload(payload)
    assert set(tensors) == {STATE_PREFIX + k for k in payload["global_state"]} | {RNG_TENSOR}
    # the checksum is the one earlier versions computed (no server optimizer term)
    state = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    assert metadata["sha256"] == digest(metadata["meta"], state, tensors[RNG_TENSOR])
    assert load_checkpoint(engine.cfg.results_dir / CHECKPOINT_NAME)["server_optimizer"] == {}


def test_a_changed_server_state_in_a_checkpoint_is_refused(tiny_config):
    from fedranklite.run.checkpoint import ResumeError, to_bytes

    cfg = tiny_config(federation={**FEDAVG, "server_optimizer": "momentum"})
    engine = build_engine(cfg)
    engine.run_round()
    tensors, metadata = encode_payload(engine.checkpoint_payload())
    key = next(k for k in tensors if k.startswith("server_optimizer/"))
    tensors[key] = tensors[key] + 1.0
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    (cfg.results_dir / CHECKPOINT_NAME).write_bytes(to_bytes(tensors, metadata))
    with pytest.raises(ResumeError, match="checksum mismatch"):
        load_checkpoint(cfg.results_dir / CHECKPOINT_NAME)


# ---- bad values
@pytest.mark.parametrize(
    "value, key",
    [
        ("{type: momentum, momentum: 1.0}", "federation.server_optimizer.momentum"),
        ("{type: momentum, lr: 0}", "federation.server_optimizer.lr"),
        ("{type: adam, eps: -1}", "federation.server_optimizer.eps"),
        ("{type: none, lr: 1.0}", "federation.server_optimizer.lr"),
        ("fedadam", "federation.server_optimizer.type"),
    ],
)
def test_a_bad_server_optimizer_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch, value, key):
    import fedranklite.run.engine as engine_mod
    from fedranklite.cli import main as cli

    monkeypatch.setattr(engine_mod, "build_engine", lambda *a, **k: pytest.fail("a bad config reached the engine"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    code = cli.main(["run", "--config", str(path), "--set", f"federation.server_optimizer={value}"])
    err = capsys.readouterr().err
    assert code == 2 and key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("aggregation", ["svd", "stack"])
def test_a_server_optimizer_on_a_refactorizing_aggregator_is_refused(tiny_config, aggregation):
    from fedranklite.config.schema import ConfigError

    expected = rf"federation.server_optimizer.type: momentum .* {aggregation} re-factorizes"
    with pytest.raises(ConfigError, match=expected):
        tiny_config(federation={"aggregation": aggregation, "server_optimizer": "momentum"})
    tiny_config(federation={"aggregation": aggregation, "server_optimizer": "none"})  # the default is fine


def test_a_server_optimizer_on_the_surrogate_backend_is_refused():
    from pathlib import Path

    from fedranklite.config.files import load_config
    from fedranklite.config.schema import ConfigError

    whatif = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "whatif_100k.yaml"
    load_config(whatif, [])  # the shipped what-if config itself loads
    with pytest.raises(ConfigError, match="the surrogate backend does not model a server optimizer"):
        load_config(whatif, ["federation.server_optimizer=adam"])
