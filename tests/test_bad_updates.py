"""Fault injection: corrupted client updates are rejected with a reason and the round goes on."""

from __future__ import annotations

import pytest
import torch

from fedranklite.federation.ranks import rank_dim
from fedranklite.federation.validation import norm_outliers, reject_reasons, structural_problem, update_distance
from fedranklite.run.engine import build_engine
from fedranklite.run.runners import LocalRunner


def lora_name(update):
    return next(n for n in update if rank_dim(n) == 0)


def nan_update(update, rank):
    name = lora_name(update)
    update[name] = update[name].clone()
    update[name][0, 0] = float("nan")


def inf_update(update, rank):
    name = next(n for n in update if rank_dim(n) is None)
    update[name] = update[name].clone()
    update[name].view(-1)[0] = float("inf")


def wrong_shape(update, rank):
    name = lora_name(update)
    update[name] = update[name][:, :-1].clone()


def rank_too_high(update, rank):
    for name, t in list(update.items()):
        axis = rank_dim(name)
        if axis is not None:
            shape = list(t.shape)
            shape[axis] = 1
            update[name] = torch.cat([t, torch.zeros(shape)], dim=axis)


def huge_norm(update, rank):
    for name in update:
        update[name] = update[name] * 1e4 + 1.0


FAULTS = {
    "nan": (nan_update, "NaN or Inf"),
    "inf": (inf_update, "NaN or Inf"),
    "shape": (wrong_shape, "shape"),
    "rank": (rank_too_high, "above the assigned rank"),
    "norm": (huge_norm, "median"),
}


class FaultyRunner(LocalRunner):
    """Corrupts the update of the first client of every round."""

    fault = None

    def run(self, round_idx, global_state, tasks):
        results = super().run(round_idx, global_state, tasks)
        FaultyRunner.fault(results[0].update, results[0].rank)
        return results


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_corrupted_update_is_rejected_logged_and_round_goes_on(tiny_config, kind, caplog):
    fault, reason_part = FAULTS[kind]
    FaultyRunner.fault = staticmethod(fault)
    cfg = tiny_config(federation={"num_rounds": 2, "clients_per_round": 4})
    engine = build_engine(cfg, runner_factory=FaultyRunner)
    with caplog.at_level("WARNING"):
        summary = engine.run()
    assert summary.rounds_completed == 2
    for rec in engine.state.records:
        bad = rec.clients.rows()[0]
        assert bad.status == "rejected" and reason_part in bad.reject_reason
        assert rec.rejected == {str(bad.cid): bad.reject_reason}
        assert all(c.status == "accepted" for c in rec.clients.rows()[1:])
    assert "rejected" in caplog.text
    assert all(torch.isfinite(t).all() for t in engine.state.global_state.values())
    assert summary.final_score is not None


def test_structural_checks_by_hand():
    glob = {"x.lora_A.w": torch.zeros(4, 3), "x.lora_B.w": torch.zeros(2, 4), "head.w": torch.zeros(2, 2)}
    good = {"x.lora_A.w": torch.ones(2, 3), "x.lora_B.w": torch.ones(2, 2), "head.w": torch.ones(2, 2)}
    assert structural_problem(good, 2, glob) is None
    assert "missing" in structural_problem({k: v for k, v in good.items() if k != "head.w"}, 2, glob)
    assert "unexpected" in structural_problem({**good, "extra": torch.ones(1)}, 2, glob)
    assert "above the assigned rank 1" in structural_problem(good, 1, glob)
    assert "shape" in structural_problem({**good, "head.w": torch.ones(3, 2)}, 2, glob)
    # distance from the rank-2 global (zeros): sqrt(6 + 4 + 4) ones
    assert update_distance(good, 2, glob) == pytest.approx(14**0.5)


def test_norm_outliers_need_three_updates_and_use_the_median():
    assert not norm_outliers([1.0, 100.0], 10).any()
    assert norm_outliers([1.0, 1.2, 0.9, 50.0], 10).tolist() == [False, False, False, True]
    assert not norm_outliers([1.0, 1.2, 0.9, 10.9], 10).any()  # median 1.1: the bound is 11
    glob = {"h": torch.zeros(2)}
    ups = [{"h": torch.full((2,), v)} for v in (1.0, 1.0, 1.0, 100.0)]
    reasons = reject_reasons(ups, [1, 1, 1, 1], glob, max_norm_ratio=10.0)
    assert reasons[:3] == [None, None, None] and "median" in reasons[3]
    assert reject_reasons(ups, [1] * 4, glob, max_norm_ratio=None) == [None] * 4
