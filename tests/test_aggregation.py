"""aggregation: fedavg (zero padding) and blockwise on mixed ranks, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fedranklite.federation.aggregation import AGGREGATORS, Contribution
from fedranklite.federation.ranks import pad, truncate

A = "m.query.lora_A.default.weight"  # (r_max, in) = (4, 2)
B = "m.query.lora_B.default.weight"  # (out, r_max) = (2, 4)
H = "head.weight"  # (2,)

T = lambda rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731

# previous global adapter (what a slice nobody trains must keep under blockwise)
GLOBAL = {
    A: T([[-1, -1], [-2, -2], [-3, -3], [-4, -4]]),
    B: T([[-1, -2, -3, -4], [-5, -6, -7, -8]]),
    H: T([-9, -9]),
}

# client 1: rank 1, 1 sample-weight; client 2: rank 2, weight 2; client 3: rank 4, weight 1
C1 = Contribution({A: T([[1, 2]]), B: T([[1], [2]]), H: T([1, 0])}, rank=1, weight=1.0)
C2 = Contribution({A: T([[3, 3], [4, 4]]), B: T([[2, 4], [0, 6]]), H: T([4, 2])}, rank=2, weight=2.0)
C3 = Contribution(
    {A: T([[5, 1], [2, 2], [4, 0], [8, 4]]), B: T([[1, 2, 3, 4], [4, 3, 2, 1]]), H: T([0, 6])}, rank=4, weight=1.0
)


def close(a: torch.Tensor, b) -> bool:
    return torch.allclose(a.to(torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=1e-6)


def test_registry():
    assert "fedavg" in AGGREGATORS and "blockwise" in AGGREGATORS
    with pytest.raises(KeyError):
        AGGREGATORS["fedprox"]


def test_fedavg_hand_computed_mixed_ranks():
    # normalised weights 1/4, 2/4, 1/4; missing slices count as zeros
    out = AGGREGATORS["fedavg"](GLOBAL, [C1, C2, C3])
    # A row 0: .25*[1,2] + .5*[3,3] + .25*[5,1] = [3.0, 2.25]
    # A row 1: .5*[4,4] + .25*[2,2]             = [2.5, 2.5]
    # A row 2: .25*[4,0] = [1, 0];  A row 3: .25*[8,4] = [2, 1]
    assert close(out[A], [[3.0, 2.25], [2.5, 2.5], [1.0, 0.0], [2.0, 1.0]])
    # B col 0: .25*[1,2] + .5*[2,0] + .25*[1,4] = [1.5, 1.5]
    # B col 1: .5*[4,6] + .25*[2,3]             = [2.5, 3.75]
    # B col 2: .25*[3,2] = [.75, .5];  B col 3: .25*[4,1] = [1, .25]
    assert close(out[B], [[1.5, 2.5, 0.75, 1.0], [1.5, 3.75, 0.5, 0.25]])
    # head: .25*[1,0] + .5*[4,2] + .25*[0,6] = [2.25, 2.5]
    assert close(out[H], [2.25, 2.5])
    assert all(out[k].dtype == torch.float32 and out[k].shape == GLOBAL[k].shape for k in GLOBAL)


def test_blockwise_hand_computed_mixed_ranks():
    out = AGGREGATORS["blockwise"](GLOBAL, [C1, C2, C3])
    # slice 0: all three clients (weights .25 .5 .25) -> same as fedavg
    # slice 1: clients 2 and 3 (.5, .25; total .75): A = [2.5, 2.5] / .75 = [10/3, 10/3]
    #          B = ([2, 3] + [.5, .75]) / .75 = [10/3, 5]
    # slices 2, 3: client 3 alone -> its own values
    assert close(out[A], [[3.0, 2.25], [10 / 3, 10 / 3], [4.0, 0.0], [8.0, 4.0]])
    assert close(out[B], [[1.5, 10 / 3, 3.0, 4.0], [1.5, 5.0, 2.0, 1.0]])
    assert close(out[H], [2.25, 2.5])  # the head is a plain weighted average
    assert all(out[k].dtype == torch.float32 and out[k].shape == GLOBAL[k].shape for k in GLOBAL)


def test_untrained_slices_blockwise_keeps_global_fedavg_zero_pads():
    # only ranks 1 and 2 report (weights 1/3, 2/3): slices 2 and 3 nobody trained
    blk = AGGREGATORS["blockwise"](GLOBAL, [C1, C2])
    # slice 0: [1,2]/3 + 2*[3,3]/3 = [7/3, 8/3]; slice 1: client 2 alone -> [4, 4]
    assert close(blk[A], [[7 / 3, 8 / 3], [4, 4], [-3, -3], [-4, -4]])
    # B col 0: [1,2]/3 + 2*[2,0]/3 = [5/3, 2/3]; col 1: [4, 6]; cols 2, 3: previous global
    assert close(blk[B], [[5 / 3, 4, -3, -4], [2 / 3, 6, -7, -8]])
    # head: [1,0]/3 + 2*[4,2]/3 = [3, 4/3]
    assert close(blk[H], [3.0, 4 / 3])

    avg = AGGREGATORS["fedavg"](GLOBAL, [C1, C2])
    # zero padding: slice 1 is pulled towards zero by client 1's weight; slices 2, 3 become exactly 0
    assert close(avg[A], [[7 / 3, 8 / 3], [8 / 3, 8 / 3], [0, 0], [0, 0]])
    assert close(avg[B], [[5 / 3, 8 / 3, 0, 0], [2 / 3, 4, 0, 0]])
    assert close(avg[H], [3.0, 4 / 3])


def test_fedavg_equals_average_of_padded_updates():
    # independent route: pad every update to r_max by hand, then a plain weighted mean
    cs = [C1, C2, C3]
    padded = [pad(dict(c.state), 4) for c in cs]
    total = sum(c.weight for c in cs)
    out = AGGREGATORS["fedavg"](GLOBAL, cs)
    for k in GLOBAL:
        expected = sum(p[k].double() * c.weight for p, c in zip(padded, cs)) / total
        assert close(out[k], expected)


@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_all_full_rank_is_plain_weighted_mean_and_methods_agree(name):
    g = torch.Generator().manual_seed(3)

    def full():
        return {A: torch.randn(4, 2, generator=g), B: torch.randn(2, 4, generator=g), H: torch.randn(2, generator=g)}

    cs = [Contribution(full(), 4, w) for w in (3.0, 1.0, 6.0)]
    out = AGGREGATORS[name](GLOBAL, cs)
    for k in GLOBAL:
        expected = (3 * cs[0].state[k].double() + cs[1].state[k].double() + 6 * cs[2].state[k].double()) / 10
        assert close(out[k], expected)


@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_single_client_at_full_rank_is_copied(name):
    out = AGGREGATORS[name](GLOBAL, [Contribution(dict(C3.state), 4, 7.0)])
    for k in GLOBAL:
        assert close(out[k], C3.state[k])


def test_blockwise_single_low_rank_client():
    # one rank-2 client: its two slices replace the global ones, the rest keep the global values
    out = AGGREGATORS["blockwise"](GLOBAL, [C2])
    assert close(out[A], [[3, 3], [4, 4], [-3, -3], [-4, -4]])
    assert close(out[B], [[2, 4, -3, -4], [0, 6, -7, -8]])
    assert close(out[H], [4, 2])


def test_blockwise_uses_declared_rank_not_tensor_size():
    # a client that sent a full-size (zero-padded) update at rank 1 still only covers slice 0
    full_size = Contribution(pad(dict(C1.state), 4), rank=1, weight=1.0)
    out = AGGREGATORS["blockwise"](GLOBAL, [full_size, C2])
    ref = AGGREGATORS["blockwise"](GLOBAL, [C1, C2])
    for k in GLOBAL:
        assert close(out[k], ref[k])


@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_zero_weight_client_has_no_influence(name):
    ghost = Contribution({A: T([[100, 100]] * 4), B: T([[100] * 4] * 2), H: T([100, 100])}, rank=4, weight=0.0)
    out = AGGREGATORS[name](GLOBAL, [C1, C2, ghost])
    ref = AGGREGATORS[name](GLOBAL, [C1, C2])
    for k in GLOBAL:
        assert close(out[k], ref[k])


@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_bad_weights_rejected_and_empty_round_is_a_no_op(name):
    with pytest.raises(ValueError):
        AGGREGATORS[name](GLOBAL, [Contribution(dict(C1.state), 1, 0.0)])
    with pytest.raises(ValueError):
        AGGREGATORS[name](GLOBAL, [Contribution(dict(C1.state), 1, -1.0), Contribution(dict(C2.state), 2, 3.0)])
    out = AGGREGATORS[name](GLOBAL, [])
    for k in GLOBAL:
        assert torch.equal(out[k], GLOBAL[k])


@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_global_state_not_mutated_and_half_precision_updates(name):
    before = {k: v.clone() for k, v in GLOBAL.items()}
    half = [Contribution({k: v.half() for k, v in c.state.items()}, c.rank, c.weight) for c in (C1, C2, C3)]
    out = AGGREGATORS[name](GLOBAL, half)
    ref = AGGREGATORS[name](GLOBAL, [C1, C2, C3])
    for k in GLOBAL:
        assert torch.equal(GLOBAL[k], before[k])
        assert out[k].dtype == torch.float32
        assert close(out[k], ref[k])  # the hand-picked values are exact in float16


def test_blockwise_matches_slice_by_slice_loop_on_random_states():
    """Independent check: average every slice j over the clients whose rank covers j, in plain loops."""
    g = torch.Generator().manual_seed(0)
    r_max, names = (
        6,
        {
            "x.lora_A.w": (6, 5),
            "x.lora_B.w": (3, 6),
            "y.lora_A.w": (6, 4),
            "y.lora_B.w": (7, 6),
            "cls.weight": (2, 3),
            "cls.bias": (2,),
        },
    )
    glob = {n: torch.randn(*s, generator=g) for n, s in names.items()}
    for trial in range(5):
        ranks = torch.randint(1, r_max + 1, (4,), generator=g).tolist()
        weights = (torch.rand(4, generator=g) * 10 + 0.1).tolist()
        cs = [
            Contribution(truncate({n: torch.randn(*s, generator=g) for n, s in names.items()}, r), r, w)
            for r, w in zip(ranks, weights)
        ]
        out = AGGREGATORS["blockwise"](glob, cs)
        for n in names:
            if "lora_" not in n:
                exp = sum(c.state[n].double() * c.weight for c in cs) / sum(weights)
                assert close(out[n], exp)
                continue
            axis = 0 if "lora_A" in n else 1
            for j in range(r_max):
                who = [c for c in cs if c.rank > j]
                got = out[n].select(axis, j)
                if not who:
                    assert torch.equal(got, glob[n].select(axis, j))
                else:
                    exp = sum(c.state[n].double().select(axis, j) * c.weight for c in who) / sum(c.weight for c in who)
                    assert close(got, exp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["fedavg", "blockwise"])
def test_global_state_on_gpu_updates_on_cpu(name):
    # the engine keeps the global adapter on the model's device while client updates come back on the CPU
    gpu_global = {k: v.cuda() for k, v in GLOBAL.items()}
    out = AGGREGATORS[name](gpu_global, [C1, C2, C3])
    ref = AGGREGATORS[name](GLOBAL, [C1, C2, C3])
    for k in GLOBAL:
        assert out[k].device.type == "cuda"
        assert close(out[k].cpu(), ref[k])
