"""lite's options (cold_start, time_cap, utility): each by hand, and the default is the seed's rule."""

from __future__ import annotations

import numpy as np
import pytest

from fedranklite.config.files import ConfigError, load_config
from fedranklite.federation.schedulers import Clients, Reports, bisect_min_max, build_scheduler
from fedranklite.federation.schedulers.lite import LiteScheduler


def lite(**kw) -> LiteScheduler:
    base = dict(r_min=1, r_max=8, r_bar=4, ema=0.5, gain_weight=1.0, throughput_weight=0.5, normalize=False)
    return LiteScheduler(**{**base, **kw})


# ---- cold_start
def test_cold_start_tier_scales_newcomers_by_their_compute_factor():
    s = lite(cold_start="tier", gain_weight=0.0, throughput_weight=1.0)
    # observed: client 0 at cf 1.0 did 10 samples/s, client 1 at cf 0.5 did 4 samples/s -> per unit [10, 8]
    s.observe(Reports.of([0, 1], rank=4, loss_drop=0.1, throughput=[10.0, 4.0]))
    c = Clients.of([0, 1, 2, 3], compute_factor=[1.0, 0.5, 0.15, 0.7])
    # newcomers: cf x median(10, 8) = cf x 9 -> [1.35, 6.3]; the mean fill would give both 7
    np.testing.assert_allclose(s.scores(c), [10.0, 4.0, 1.35, 6.3])
    mean_fill = lite(gain_weight=0.0, throughput_weight=1.0)
    mean_fill.observe(Reports.of([0, 1], rank=4, loss_drop=0.1, throughput=[10.0, 4.0]))
    np.testing.assert_allclose(mean_fill.scores(c), [10.0, 4.0, 7.0, 7.0])


def test_cold_start_tier_with_nobody_observed_shares_by_compute_factor():
    s = lite(cold_start="tier", gain_weight=0.0, throughput_weight=1.0, r_bar=4)  # budget 12
    ranks = s.assign(Clients.of([0, 1, 2], compute_factor=[1.0, 0.7, 0.15]))
    # shares cf / 1.85 x 12 = [6.49, 4.54, 0.97] -> [6, 5, 1]
    assert ranks.tolist() == [6, 5, 1]
    assert lite(gain_weight=0.0, throughput_weight=1.0).assign(Clients.of([0, 1, 2])).tolist() == [4, 4, 4]


def test_cold_start_tier_keeps_the_mean_fill_for_the_loss_term():
    s = lite(cold_start="tier", gain_weight=1.0, throughput_weight=0.0)
    s.observe(Reports.of([0, 1], rank=4, loss_drop=[0.2, 0.4], throughput=1.0))
    np.testing.assert_allclose(s.scores(Clients.of([0, 1, 2], compute_factor=[1, 1, 0.15])), [0.2, 0.4, 0.3])


# ---- time_cap
def test_time_cap_deadline_caps_the_slow_client_and_shares_the_rest():
    # equal scores; client 2 takes 50 + 10 r s: under 0.9 x 100 = 90 s only up to rank 4
    s = lite(time_cap="deadline", deadline=100.0, r_bar=6, r_max=10)  # budget 18
    c = Clients.of([0, 1, 2], time_intercept=[5.0, 5.0, 50.0], time_per_rank=[1.0, 1.0, 10.0])
    ranks = s.assign(c)
    assert ranks.tolist() == [7, 7, 4]
    assert c.predicted_time(ranks).max() <= 90.0
    assert lite(r_bar=6, r_max=10).assign(c).tolist() == [6, 6, 6]  # uncapped: the seed's rule


def test_time_cap_deadline_never_goes_below_the_lower_bound():
    s = lite(time_cap="deadline", deadline=10.0, r_min=2, r_bar=4)
    c = Clients.of([0, 1], time_intercept=[1.0, 50.0], time_per_rank=[0.1, 1.0])  # client 1 misses anyway
    ranks = s.assign(c)
    assert ranks[1] == 2 and ranks.sum() == 8


def test_time_cap_deadline_without_a_deadline_is_the_plain_rule():
    s = lite(time_cap="deadline", deadline=None)
    c = Clients.of([0, 1], time_intercept=[1.0, 50.0], time_per_rank=[0.1, 1.0])
    assert s.assign(c).tolist() == lite().assign(c).tolist()


def test_time_cap_minmax_stays_within_slack_of_the_exact_min_max():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = 6
        a, b = rng.uniform(0, 20, n), rng.uniform(0.1, 3, n)
        c = Clients.of(np.arange(n), time_intercept=a, time_per_rank=b)
        s = lite(time_cap="minmax", minmax_slack=0.1, r_bar=4, r_max=8)
        s.observe(Reports.of(np.arange(n), 4, rng.uniform(0, 1, n), rng.uniform(1, 10, n)))
        ranks = s.assign(c)
        lo, hi = np.ones(n, np.int64), np.full(n, 8)
        best = c.predicted_time(bisect_min_max(a, b, lo, hi, 24)).max()
        assert ranks.sum() == 24
        assert c.predicted_time(ranks).max() <= 1.1 * best + 1e-9


def test_time_cap_minmax_with_non_finite_times_notes_and_does_not_cap():
    s = lite(time_cap="minmax")
    c = Clients.of([0, 1], time_intercept=[np.inf, 1.0], time_per_rank=[1.0, 1.0])
    assert s.assign(c).sum() == 8
    assert any("no minmax time cap" in n for n in s.notes)


# ---- utility
def test_utility_loss_level_is_samples_times_rms_loss():
    s = lite(utility="loss_level", throughput_weight=0.0)
    # client 0: easy local task (loss drop large, loss level low); client 1: hard (high loss, small drop)
    s.observe(Reports.of([0, 1], rank=4, loss_drop=[0.5, 0.05], throughput=1.0, loss_rms=[0.1, 0.8], samples=[64, 32]))
    np.testing.assert_allclose(s.scores(Clients.of([0, 1])), [6.4, 25.6])
    drop = lite(throughput_weight=0.0)
    drop.observe(Reports.of([0, 1], rank=4, loss_drop=[0.5, 0.05], throughput=1.0, loss_rms=[0.1, 0.8], samples=64))
    np.testing.assert_allclose(drop.scores(Clients.of([0, 1])), [0.5, 0.05])


def test_utility_loss_level_ignores_unknown_levels():
    s = lite(utility="loss_level", throughput_weight=0.0)
    s.observe(Reports.of([0], rank=4, loss_drop=0.1, throughput=1.0, loss_rms=0.5, samples=10))
    s.observe(Reports.of([0], rank=4, loss_drop=0.1, throughput=1.0, loss_rms=np.nan, samples=0))  # lost client
    np.testing.assert_allclose(s.scores(Clients.of([0])), [5.0])


# ---- config
def test_options_from_config_and_the_default_is_the_seed_rule(tmp_path):
    cfg = load_config("configs/base.yaml", ["output_dir=" + str(tmp_path)])
    s = build_scheduler(cfg)
    assert (s.cold_start, s.time_cap, s.utility) == ("mean", "none", "loss_drop")
    cfg = load_config(
        "configs/experiments/lite_noniid_deadline.yaml",
        [
            "federation.scheduler.cold_start=tier",
            "federation.scheduler.time_cap=deadline",
            "federation.scheduler.utility=loss_level",
        ],
    )
    s = build_scheduler(cfg)
    assert (s.cold_start, s.time_cap, s.utility, s.deadline) == ("tier", "deadline", "loss_level", 90.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("federation.scheduler.time_cap=deadline", "time_cap=deadline needs a round deadline"),
        ("federation.scheduler.cold_start=oracle", "federation.scheduler.cold_start"),
        ("federation.scheduler.utility=accuracy", "federation.scheduler.utility"),
        ("federation.scheduler.time_margin=0", "federation.scheduler.time_margin"),
        ("federation.scheduler.minmax_slack=-1", "federation.scheduler.minmax_slack"),
    ],
)
def test_bad_option_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/base.yaml", [override])


def test_options_are_lite_only():
    with pytest.raises(ConfigError, match="unknown key of scheduler 'cvx'"):
        load_config("configs/base.yaml", ["federation.scheduler.type=cvx", "federation.scheduler.time_cap=minmax"])


def test_time_cap_treats_every_unknown_time_as_uncapped():
    s = lite(time_cap="deadline", deadline=10.0, r_bar=4, r_max=8)  # limit 9 s, budget 16
    c = Clients.of([0, 1, 2, 3], time_intercept=[1.0, np.nan, 1.0, 5.0], time_per_rank=[0.1, 0.0, np.nan, 1.0])
    hi = s._time_caps(c, np.ones(4, np.int64), np.full(4, 8), 16)
    assert hi.tolist() == [8, 8, 8, 4]  # only client 3 (5 + r <= 9 -> r <= 4) is capped


def test_time_cap_below_the_budget_is_noted():
    s = lite(time_cap="deadline", deadline=10.0, r_bar=8, r_max=8)  # budget 24; t = 1 + 2r fits r <= 4
    c = Clients.of([0, 1, 2], time_intercept=1.0, time_per_rank=2.0)
    assert s.assign(c).tolist() == [4, 4, 4]
    assert any("below the budget 24" in n for n in s.notes)
    s.assign(Clients.of([0, 1, 2]))  # notes are per assign
    assert s.notes == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_cold_start_tier_with_an_unusable_compute_factor_takes_the_mean_fill(bad):
    s = lite(cold_start="tier", gain_weight=0.0, throughput_weight=1.0)
    s.observe(Reports.of([0, 1], rank=4, loss_drop=0.1, throughput=[10.0, 4.0]))
    scores = s.scores(Clients.of([0, 1, 2, 3], compute_factor=[1.0, 0.5, 0.5, bad]))
    # client 2 by its tier: 0.5 x median(10, 8) = 4.5; client 3 (unusable factor): mean of the others
    np.testing.assert_allclose(scores, [10.0, 4.0, 4.5, np.mean([10.0, 4.0, 4.5])])
    assert np.isfinite(scores).all()


def test_reports_without_samples_leave_the_loss_level_ema_alone():
    s = lite(utility="loss_level", throughput_weight=0.0)
    s.observe(Reports.of([0], rank=4, loss_drop=0.1, throughput=1.0, loss_rms=0.5, samples=10))
    s.observe(Reports.of([0], rank=4, loss_drop=0.1, throughput=1.0, loss_rms=0.5))  # samples unknown
    np.testing.assert_allclose(s.scores(Clients.of([0])), [5.0])


def test_a_plugin_scheduler_with_the_old_from_config_signature_still_builds(tmp_path):
    from fedranklite.federation.schedulers import SCHEDULERS, Scheduler, SchedulerParams

    class Old(Scheduler):
        @classmethod
        def from_config(cls, params, r_max):  # written before schedulers could take the deadline
            return cls(params.r_min, r_max, params.r_bar)

        def assign(self, clients):
            return np.full(len(clients), self.r_min)

    class OldParams(SchedulerParams):
        pass

    SCHEDULERS.register("old_signature_test", OldParams)(Old)
    try:
        cfg = load_config(
            "configs/experiments/lite_noniid_deadline.yaml", ["federation.scheduler.type=old_signature_test"]
        )
        assert isinstance(build_scheduler(cfg), Old)
    finally:
        SCHEDULERS._entries.pop("old_signature_test")
