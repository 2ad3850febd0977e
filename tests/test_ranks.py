"""ranks.py: moving LoRA factors between ranks (truncate, pad) and counting bytes. Pure tensors."""

from __future__ import annotations

import pytest
import torch

from fedranklite.federation.ranks import num_bytes, pad, rank_dim, tensor_rank, truncate

R_MAX = 4
IN, OUT = 3, 5


def adapter(r: int = R_MAX, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "enc.layer.0.query.lora_A.default.weight": torch.randn(r, IN, generator=g).to(dtype),
        "enc.layer.0.query.lora_B.default.weight": torch.randn(OUT, r, generator=g).to(dtype),
        "head.weight": torch.randn(2, OUT, generator=g).to(dtype),
        "head.bias": torch.randn(2, generator=g).to(dtype),
    }


A = "enc.layer.0.query.lora_A.default.weight"
B = "enc.layer.0.query.lora_B.default.weight"


def test_rank_dim_by_name():
    assert rank_dim(A) == 0
    assert rank_dim(B) == 1
    assert rank_dim("head.weight") is None
    assert rank_dim("classifier.bias") is None
    assert tensor_rank(A, torch.zeros(3, 7)) == 3
    assert tensor_rank(B, torch.zeros(7, 2)) == 2
    assert tensor_rank("head.weight", torch.zeros(7, 2)) is None


@pytest.mark.parametrize("r", [0, 1, 2, 3, 4])
def test_truncate_shapes_and_values(r):
    full = adapter()
    t = truncate(full, r)
    assert t[A].shape == (r, IN)
    assert t[B].shape == (OUT, r)
    # first r rows of A, first r columns of B
    assert torch.equal(t[A], full[A][:r, :])
    assert torch.equal(t[B], full[B][:, :r])
    # head passes through unchanged
    assert torch.equal(t["head.weight"], full["head.weight"])
    assert torch.equal(t["head.bias"], full["head.bias"])


def test_truncate_is_a_copy_not_a_view():
    full = adapter()
    t = truncate(full, 2)
    t[A].fill_(123.0)
    t[B].fill_(123.0)
    assert not torch.any(full[A] == 123.0)
    assert not torch.any(full[B] == 123.0)


def test_truncate_beyond_r_max_keeps_everything():
    full = adapter()
    t = truncate(full, 10)
    assert torch.equal(t[A], full[A]) and torch.equal(t[B], full[B])


def test_pad_fills_zeros():
    r = 2
    small = adapter(r)
    p = pad(small, R_MAX)
    assert p[A].shape == (R_MAX, IN)
    assert p[B].shape == (OUT, R_MAX)
    assert torch.equal(p[A][:r], small[A])
    assert torch.equal(p[B][:, :r], small[B])
    assert torch.count_nonzero(p[A][r:]) == 0
    assert torch.count_nonzero(p[B][:, r:]) == 0
    assert p[A].dtype == small[A].dtype and p[B].dtype == small[B].dtype
    assert torch.equal(p["head.weight"], small["head.weight"])


def test_pad_from_rank_zero_is_all_zero():
    p = pad(adapter(0), R_MAX)
    assert torch.equal(p[A], torch.zeros(R_MAX, IN))
    assert torch.equal(p[B], torch.zeros(OUT, R_MAX))


def test_pad_rejects_rank_above_r_max():
    with pytest.raises(ValueError, match="exceeds r_max"):
        pad(adapter(5), R_MAX)


@pytest.mark.parametrize("r", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_truncate_of_pad_is_identity_on_active_block(r, dtype):
    small = adapter(r, dtype=dtype, seed=r)
    back = truncate(pad(small, R_MAX), r)
    assert back.keys() == small.keys()
    for name in small:
        assert back[name].dtype == small[name].dtype
        assert torch.equal(back[name], small[name]), name


@pytest.mark.parametrize("r", [1, 2, 3])
def test_pad_of_truncate_zeroes_only_the_inactive_block(r):
    full = adapter()
    rt = pad(truncate(full, r), R_MAX)
    assert torch.equal(rt[A][:r], full[A][:r])
    assert torch.equal(rt[B][:, :r], full[B][:, :r])
    assert torch.count_nonzero(rt[A][r:]) == 0
    assert torch.count_nonzero(rt[B][:, r:]) == 0
    # LoRA product with the inactive dims zeroed = product of the active block only
    assert torch.allclose(rt[B] @ rt[A], full[B][:, :r] @ full[A][:r])


def test_num_bytes_counts_elements_times_dtype_size():
    # A: 4x3 = 12, B: 5x4 = 20, head: 2x5 + 2 = 12 -> 44 elements
    assert num_bytes(adapter(dtype=torch.float32)) == 44 * 4
    assert num_bytes(adapter(dtype=torch.float16)) == 44 * 2
    assert num_bytes(adapter(dtype=torch.bfloat16)) == 44 * 2
    assert num_bytes(adapter(dtype=torch.float64)) == 44 * 8
    mixed = {
        "a": torch.zeros(10, dtype=torch.float16),
        "b": torch.zeros(3, 2, dtype=torch.float32),
        "c": torch.zeros(7, dtype=torch.int8),
        "d": torch.zeros(0),
    }
    assert num_bytes(mixed) == 10 * 2 + 6 * 4 + 7 * 1 + 0
    assert num_bytes({}) == 0


def test_num_bytes_of_truncated_adapter_scales_with_rank():
    # rank r: A r*3 + B 5*r = 8r LoRA elements, plus 12 head elements, float32
    full = adapter()
    for r in range(R_MAX + 1):
        assert num_bytes(truncate(full, r)) == (8 * r + 12) * 4
