"""svd (FlexLoRA-style), stack (FLoRA-style) and hetlora (HetLoRA-style) on small random matrices,
against direct computations of the aggregate's dW = B @ A; and each one through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from fedranklite.config.files import validate
from fedranklite.federation.aggregation import AGGREGATORS, Contribution
from fedranklite.federation.aggregation.stack import stacked_factors
from fedranklite.run.engine import build_engine

A1, B1 = "l0.query.lora_A.default.weight", "l0.query.lora_B.default.weight"  # (8, 48), (64, 8)
A2, B2 = "l0.value.lora_A.default.weight", "l0.value.lora_B.default.weight"  # (8, 20), (12, 8)
H = "head.weight"
R_MAX = 8
SHAPES = {A1: (R_MAX, 48), B1: (64, R_MAX), A2: (R_MAX, 20), B2: (12, R_MAX), H: (3, 5)}
PAIRS = [(A1, B1), (A2, B2)]
RANKS, WEIGHTS = [2, 4, 8, 8], [10.0, 30.0, 20.0, 40.0]


def make(ranks=RANKS, weights=WEIGHTS, padded=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    glob = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    contribs = []
    for r, w in zip(ranks, weights):
        st = {}
        for k, s in SHAPES.items():
            t = torch.randn(s, generator=g)
            if "lora_A" in k:
                t = t[:r] if not padded else torch.cat([t[:r], torch.zeros(R_MAX - r, s[1])])
            elif "lora_B" in k:
                t = t[:, :r] if not padded else torch.cat([t[:, :r], torch.zeros(s[0], R_MAX - r)], dim=1)
            st[k] = t
        contribs.append(Contribution(st, rank=r, weight=w))
    return glob, contribs


def direct_sum(contribs, a, b, weights=None):
    """sum_k w_k B_k A_k in float64 with normalized sample weights."""
    w = torch.tensor(weights or [c.weight for c in contribs], dtype=torch.float64)
    w = w / w.sum()
    return sum(wk * c.state[b][:, : c.rank].double() @ c.state[a][: c.rank].double() for wk, c in zip(w, contribs))


def product(state, a, b):
    return state[b].double() @ state[a].double()


def fro(x):
    return float(torch.linalg.matrix_norm(x))


def test_registered_and_shapes_dtypes_kept():
    glob, contribs = make()
    for name in ("svd", "stack", "hetlora"):
        out = AGGREGATORS[name](glob, contribs)
        assert list(out) == list(glob)
        assert all(out[k].shape == glob[k].shape and out[k].dtype == glob[k].dtype for k in glob)
        assert torch.allclose(out[H].double(), sum(c.weight * c.state[H].double() for c in contribs) / sum(WEIGHTS))
        assert AGGREGATORS[name](glob, []) == glob


@pytest.mark.parametrize("padded", [False, True])
def test_svd_is_the_truncated_svd_of_the_weighted_product(padded):
    glob, contribs = make(padded=padded)
    out = AGGREGATORS["svd"](glob, contribs)
    for a, b in PAIRS:
        target = direct_sum(contribs, a, b)
        S = torch.linalg.svdvals(target)
        U, S_, Vh = torch.linalg.svd(target, full_matrices=False)
        best = (U[:, :R_MAX] * S_[:R_MAX]) @ Vh[:R_MAX]
        got = product(out, a, b)
        assert torch.allclose(got, best, atol=1e-4, rtol=1e-4)
        # Eckart-Young: the error is sqrt of the sum of the discarded squared singular values ...
        bound = float(S[R_MAX:].square().sum().sqrt())
        err = fro(got - target)
        assert err == pytest.approx(bound, rel=1e-4, abs=1e-4)
        # ... and no rank-r_max alternative does better
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            P = torch.randn(target.shape[0], R_MAX, generator=g, dtype=torch.float64)
            Q = torch.randn(R_MAX, target.shape[1], generator=g, dtype=torch.float64)
            assert fro(P @ Q - target) >= err
            Qp, _ = torch.linalg.qr(P)  # the best approximation within a random column space
            assert fro(Qp @ (Qp.T @ target) - target) >= err - 1e-9
        # balanced split: B = U sqrt(S), A = sqrt(S) V^T -> column norms of B == row norms of A == sqrt(sigma)
        assert torch.allclose(out[b].double().norm(dim=0), S[:R_MAX].sqrt(), atol=1e-4)
        assert torch.allclose(out[a].double().norm(dim=1), S[:R_MAX].sqrt(), atol=1e-4)
        # the first r slices are the best rank-r approximation (what a rank-r client receives)
        r = 3
        best_r = (U[:, :r] * S_[:r]) @ Vh[:r]
        assert torch.allclose(out[b][:, :r].double() @ out[a][:r].double(), best_r, atol=1e-4, rtol=1e-4)


def test_svd_low_total_rank_is_exact_and_zero_padded():
    glob, contribs = make(ranks=[1, 2], weights=[1.0, 3.0])  # rank(sum) <= 3 < r_max
    out = AGGREGATORS["svd"](glob, contribs)
    for a, b in PAIRS:
        assert torch.allclose(product(out, a, b), direct_sum(contribs, a, b), atol=1e-5)
        assert out[a][3:].abs().max() < 1e-5 and out[b][:, 3:].abs().max() < 1e-5


def test_stack_is_exact_before_compression_and_optimal_after():
    glob, contribs = make()
    w = [c.weight / sum(WEIGHTS) for c in contribs]
    out = AGGREGATORS["stack"](glob, contribs)
    svd_out = AGGREGATORS["svd"](glob, contribs)
    for a, b in PAIRS:
        Bst, Ast = stacked_factors(contribs, w, a, b)
        assert Bst.shape[1] == Ast.shape[0] == sum(RANKS)
        exact = direct_sum(contribs, a, b)
        assert torch.allclose(Bst @ Ast, exact, atol=1e-10, rtol=1e-10)  # stacking itself loses nothing
        got = product(out, a, b)
        S = torch.linalg.svdvals(exact)
        rel = fro(got - exact) / fro(exact)
        rel_bound = float(S[R_MAX:].square().sum().sqrt() / S.square().sum().sqrt())
        print(
            f"stack {a.split('.')[1]}: stacked rank {Bst.shape[1]} -> {R_MAX}, relative Frobenius error "
            f"{rel:.4f} (Eckart-Young {rel_bound:.4f})"
        )
        assert rel == pytest.approx(rel_bound, rel=1e-4, abs=1e-5)  # QR route = truncated SVD of the product
        assert torch.allclose(got, product(svd_out, a, b), atol=1e-4, rtol=1e-4)  # same math as svd


def test_stack_with_small_total_rank_has_no_compression_error():
    glob, contribs = make(ranks=[1, 3, 2], weights=[1.0, 1.0, 2.0])  # stacked rank 6 <= r_max
    out = AGGREGATORS["stack"](glob, contribs)
    for a, b in PAIRS:
        exact = direct_sum(contribs, a, b)
        assert fro(product(out, a, b) - exact) / fro(exact) < 1e-6


@pytest.mark.parametrize("padded", [False, True])
def test_hetlora_norm_weighted_zero_padding(padded):
    glob, contribs = make(padded=padded)
    out = AGGREGATORS["hetlora"](glob, contribs)
    for a, b in PAIRS:
        # weights n_k * sqrt(||A_k||^2 + ||B_k||^2), per pair, normalized
        norms = [
            math.sqrt(
                float(c.state[a][: c.rank].double().square().sum() + c.state[b][:, : c.rank].double().square().sum())
            )
            for c in contribs
        ]
        p = torch.tensor([c.weight * n for c, n in zip(contribs, norms)], dtype=torch.float64)
        p = p / p.sum()
        A = torch.zeros(SHAPES[a], dtype=torch.float64)
        B = torch.zeros(SHAPES[b], dtype=torch.float64)
        for pk, c in zip(p, contribs):
            A[: c.rank] += pk * c.state[a][: c.rank].double()
            B[:, : c.rank] += pk * c.state[b][:, : c.rank].double()
        assert torch.allclose(out[a].double(), A, atol=1e-5) and torch.allclose(out[b].double(), B, atol=1e-5)
        assert torch.allclose(product(out, a, b), B @ A, atol=1e-4)
        # larger updates pull harder than under plain fedavg
    big = [
        Contribution(
            {k: (v * 10 if k != H else v) for k, v in contribs[0].state.items()}, contribs[0].rank, contribs[0].weight
        )
    ] + contribs[1:]
    assert (AGGREGATORS["hetlora"](glob, big)[A1][0] - AGGREGATORS["fedavg"](glob, big)[A1][0]).abs().sum() > 0


def test_hetlora_all_zero_updates_fall_back_to_sample_weights():
    glob, contribs = make(ranks=[2, 4], weights=[1.0, 3.0])
    zero = [
        Contribution({k: (torch.zeros_like(v) if "lora" in k else v) for k, v in c.state.items()}, c.rank, c.weight)
        for c in contribs
    ]
    out = AGGREGATORS["hetlora"](glob, zero)
    assert all(torch.isfinite(t).all() for t in out.values())
    assert out[A1].abs().max() == 0


@pytest.mark.parametrize("name", ["svd", "stack", "hetlora"])
def test_accepted_by_config_and_runs_through_the_engine(tiny_config, name):
    cfg = tiny_config(federation={"aggregation": name, "num_rounds": 1})
    assert cfg.federation.aggregation.type == name
    engine = build_engine(cfg)
    engine.run()
    rec = engine.state.records[-1]
    assert rec.score is not None
    assert all(torch.isfinite(t).all() for t in engine.state.global_state.values())


def test_unknown_aggregation_still_rejected(tmp_path):
    from conftest import tiny_tree

    with pytest.raises(Exception, match="aggregation"):
        validate(tiny_tree(tmp_path, federation={"aggregation": "flexlora"}))
