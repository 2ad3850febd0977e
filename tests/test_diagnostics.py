"""Rank-collapse diagnostics, checked by hand on small matrices."""

from __future__ import annotations

import math

import pytest
import torch

from fedranklite.federation.diagnostics import exp_entropy, module_group, rank_energy

T = lambda rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731


def names(layer, module):
    p = f"m.layer.{layer}.attention.self.{module}"
    return f"{p}.lora_A.default.weight", f"{p}.lora_B.default.weight"


def test_module_group():
    assert module_group(names(3, "query")[0]) == "query" and module_group(names(0, "value")[1]) == "value"
    with pytest.raises(ValueError):
        module_group("head.weight")


def test_block_energy_by_hand_summed_over_layers():
    a0, b0 = names(0, "query")
    a1, b1 = names(1, "query")
    av, bv = names(0, "value")
    state = {
        # layer 0 query: A rows have squared norms 1, 4, 0; B columns 2, 1, 9
        a0: T([[1, 0], [0, 2], [0, 0]]),
        b0: T([[1, 1, 3], [1, 0, 0]]),
        # layer 1 query: A rows 1, 1, 1; B columns 0, 0, 4 -> energies 0, 0, 4
        a1: T([[1, 0], [1, 0], [0, 1]]),
        b1: T([[0, 0, 2], [0, 0, 0]]),
        # value: only block 0 carries energy (dW is rank 1)
        av: T([[3, 4], [0, 0], [0, 0]]),
        bv: T([[1, 0, 0], [0, 0, 0]]),
        "head.weight": T([1.0, 2.0]),
    }
    out = rank_energy(state)
    assert list(out) == ["query", "value"]
    # query: layer 0 gives [1*2, 4*1, 0*9] = [2, 4, 0]; layer 1 gives [0, 0, 4]; sum [2, 4, 4]
    assert out["query"]["energy"] == pytest.approx([2, 4, 4])
    # the block energy is the squared Frobenius norm of slice j's rank-1 term
    A, B = state[a0].double(), state[b0].double()
    for j in range(3):
        assert float(torch.outer(B[:, j], A[j]).square().sum()) == pytest.approx([2, 4, 0][j])
    # block effective rank: p = [.2, .4, .4]
    p = [0.2, 0.4, 0.4]
    assert out["query"]["block_effective_rank"] == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)), rel=1e-5)
    # effective rank: layer 0 dW = [[1, 2], [1, 0]] -> singular values sqrt(3 +- sqrt(5));
    # layer 1 dW = [[0, 2], [0, 0]] -> one singular value -> effective rank 1
    s = torch.tensor([math.sqrt(3 + math.sqrt(5)), math.sqrt(3 - math.sqrt(5))])
    p0 = s / s.sum()
    e0 = math.exp(-float((p0 * p0.log()).sum()))
    assert out["query"]["effective_rank"] == pytest.approx((e0 + 1.0) / 2, rel=1e-5)
    assert out["value"] == {
        "energy": pytest.approx([25, 0, 0]),
        "effective_rank": pytest.approx(1.0),
        "block_effective_rank": pytest.approx(1.0),
    }


def test_zero_adapter_and_uniform_energy():
    a, b = names(0, "query")
    zero = rank_energy({a: torch.zeros(4, 3), b: torch.zeros(5, 4)})
    assert zero["query"] == {"energy": [0, 0, 0, 0], "effective_rank": 0.0, "block_effective_rank": 0.0}
    # orthonormal blocks of equal energy: both effective ranks equal the rank
    eye = rank_energy({a: torch.eye(4)[:, :3].T.contiguous(), b: torch.eye(5)[:, :3].contiguous()})
    assert eye["query"]["effective_rank"] == pytest.approx(3.0) and eye["query"][
        "block_effective_rank"
    ] == pytest.approx(3.0)
    assert exp_entropy(torch.tensor([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0)


def test_engine_records_rank_energy_and_plot_draws_it_only_when_present(tiny_config):
    import json

    from fedranklite.run.engine import build_engine
    from fedranklite.study.plots import plot_run

    cfg = tiny_config(federation={"num_rounds": 2})
    engine = build_engine(cfg)
    engine.run()
    for rec in engine.state.records:
        assert set(rec.rank_energy) == {"query", "value"}
        for g in rec.rank_energy.values():
            assert len(g["energy"]) == 8 and all(e >= 0 for e in g["energy"])
            assert 0 <= g["effective_rank"] <= 8 and 0 <= g["block_effective_rank"] <= 8
    lines = (cfg.results_dir / "rounds.jsonl").read_text().splitlines()
    assert all("rank_energy" in json.loads(line) for line in lines)
    assert "rank_energy.png" in [p.name for p in plot_run(cfg.results_dir)]
    # a results folder from before the diagnostics: no key, no figure, no error
    stripped = [json.dumps({k: v for k, v in json.loads(line).items() if k != "rank_energy"}) for line in lines]
    (cfg.results_dir / "rounds.jsonl").write_text("\n".join(stripped) + "\n")
    assert "rank_energy.png" not in [p.name for p in plot_run(cfg.results_dir, cfg.results_dir / "old")]
