"""`uniform`: the largest common rank every selected client can afford (memory, deadline), else r_min."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedranklite.federation.schedulers import SCHEDULERS, Clients, build_scheduler
from fedranklite.federation.schedulers.uniform import UniformScheduler


def test_registered_and_built_with_deadline():
    section = SCHEDULERS.parse(dict(type="uniform", r_min=2, r_bar=8.0))
    fed = SimpleNamespace(scheduler=section)
    cfg = SimpleNamespace(federation=fed, r_max=16, deadline=SimpleNamespace(seconds=30.0))
    sch = build_scheduler(cfg)
    assert isinstance(sch, UniformScheduler)
    assert (sch.deadline, sch.r_max, sch.r_min) == (30.0, 16, 2)


def test_memory_bound_no_deadline():
    # memory caps 12, 6, 16 -> every client can hold at most 6; r_max 16
    sch = UniformScheduler(r_min=2, r_max=16)
    ranks = sch.assign(Clients.of([0, 1, 2], max_rank=[12, 6, 16]))
    assert ranks.tolist() == [6, 6, 6]


def test_r_max_bound_without_memory_or_deadline():
    sch = UniformScheduler(r_min=2, r_max=16)
    assert sch.assign(Clients.of([0, 1])).tolist() == [16, 16]


def test_deadline_bound():
    # deadline 20 s. client 0: 4 + 1.0 r <= 20 -> r <= 16; client 1: 10 + 1.5 r <= 20 -> r <= 6.67 -> 6;
    # client 2: 2 + 0.25 r -> r <= 72. Memory allows 16 everywhere. Common rank: 6.
    sch = UniformScheduler(r_min=2, r_max=16, deadline=20.0)
    clients = Clients.of([0, 1, 2], max_rank=16, time_intercept=[4.0, 10.0, 2.0], time_per_rank=[1.0, 1.5, 0.25])
    ranks = sch.assign(clients)
    assert ranks.tolist() == [6, 6, 6]
    assert np.all(clients.predicted_time(ranks) <= 20.0)
    # one more rank would break client 1's deadline: 10 + 1.5 * 7 = 20.5
    assert clients.predicted_time(np.array([7, 7, 7])).max() > 20.0
    assert sch.notes == []


def test_deadline_exactly_met_is_allowed():
    # 5 + 1.25 * 8 = 15.0 exactly
    sch = UniformScheduler(r_min=1, r_max=16, deadline=15.0)
    assert sch.assign(Clients.of([0], time_intercept=5.0, time_per_rank=1.25)).tolist() == [8]


def test_memory_tighter_than_deadline():
    # deadline allows 10 (0 + 2 r <= 20), memory allows 4 for client 1
    sch = UniformScheduler(r_min=2, r_max=16, deadline=20.0)
    clients = Clients.of([0, 1], max_rank=[16, 4], time_intercept=0.0, time_per_rank=2.0)
    assert sch.assign(clients).tolist() == [4, 4]


def test_nothing_fits_gives_r_min():
    # client 1: 18 + 2 r with r_min 2 -> 22 > 20: not even r_min fits
    sch = UniformScheduler(r_min=2, r_max=16, deadline=20.0)
    clients = Clients.of([0, 1], time_intercept=[1.0, 18.0], time_per_rank=[0.5, 2.0])
    assert sch.assign(clients).tolist() == [2, 2]
    assert sch.notes and "r_min" in sch.notes[0]


def test_intercept_past_deadline_gives_r_min():
    sch = UniformScheduler(r_min=3, r_max=16, deadline=10.0)
    clients = Clients.of([0, 1], time_intercept=[1.0, 11.0], time_per_rank=[0.1, 0.0])
    assert sch.assign(clients).tolist() == [3, 3]


def test_memory_below_r_min_is_respected_per_client():
    # client 1's memory holds only 1 < r_min: it gets 1 (as fixed does), the others r_min
    sch = UniformScheduler(r_min=2, r_max=16)
    assert sch.assign(Clients.of([0, 1, 2], max_rank=[16, 1, 16])).tolist() == [2, 1, 2]


def test_ignores_budget():
    # r_bar 4 with 3 clients is a budget of 12; uniform hands out 16 each = 48
    sch = UniformScheduler(r_min=2, r_max=16, r_bar=4.0)
    assert sch.assign(Clients.of([0, 1, 2])).sum() == 48


def test_no_clients():
    assert UniformScheduler(r_min=2, r_max=16, deadline=5.0).assign(Clients.of([])).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 20
    intercept = rng.uniform(0, 10, n)
    slope = rng.uniform(0, 2, n)
    mem = rng.integers(1, 33, n)
    deadline = float(rng.uniform(10, 40))
    sch = UniformScheduler(r_min=2, r_max=32, deadline=deadline)
    ranks = sch.assign(Clients.of(np.arange(n), max_rank=mem, time_intercept=intercept, time_per_rank=slope))
    fits = [r for r in range(2, 33) if np.all(mem >= r) and np.all(intercept + slope * r <= deadline)]
    expected = max(fits) if fits else 2
    assert ranks.tolist() == np.minimum(expected, mem).tolist()


def test_skip_hopeless_leaves_a_client_that_misses_the_deadline_at_any_rank_out_of_the_common_rank():
    # deadline 10 s. client 2's compute alone (12 s) misses it at every rank; the others fit up to rank 16 and 8.
    clients = Clients.of([0, 1, 2], max_rank=16, time_intercept=[2.0, 2.0, 12.0], time_per_rank=[0.5, 1.0, 0.01])
    plain = UniformScheduler(r_min=2, r_max=16, deadline=10.0)
    assert plain.assign(clients).tolist() == [2, 2, 2]  # the default rule: r_min for everyone
    assert "does not fit every client" in plain.notes[0]
    skip = UniformScheduler(r_min=2, r_max=16, deadline=10.0, skip_hopeless=True)
    assert skip.assign(clients).tolist() == [8, 8, 8]  # client 1: 2 + 1.0 r <= 10 -> 8
    assert skip.notes == ["uniform: 1 client(s) miss the deadline even at r_min=2; left out of the common rank 8"]
    # a client that fits at r_min but not above still binds (it is not hopeless)
    tight = Clients.of([0, 1], max_rank=16, time_intercept=[2.0, 9.0], time_per_rank=[0.5, 0.5])
    assert skip.assign(tight).tolist() == [2, 2] and skip.notes == []
    # everyone hopeless: nothing to leave out; r_min as before
    gone = Clients.of([0, 1], max_rank=16, time_intercept=[11.0, 12.0], time_per_rank=[0.5, 0.5])
    assert skip.assign(gone).tolist() == [2, 2] and "does not fit" in skip.notes[0]
    # without a deadline nobody is hopeless; memory still caps the hopeless client's own rank
    assert UniformScheduler(r_min=2, r_max=16, skip_hopeless=True).assign(clients).tolist() == [16, 16, 16]
    capped = Clients.of([0, 1, 2], max_rank=[16, 16, 4], time_intercept=[2.0, 2.0, 12.0], time_per_rank=0.1)
    assert skip.assign(capped).tolist() == [16, 16, 4]  # the hopeless client's own cap binds only itself


def test_skip_hopeless_is_a_config_option_off_by_default():
    assert SCHEDULERS.parse(dict(type="uniform")).skip_hopeless is False
    section = SCHEDULERS.parse(dict(type="uniform", skip_hopeless=True))
    cfg = SimpleNamespace(
        federation=SimpleNamespace(scheduler=section), r_max=16, deadline=SimpleNamespace(seconds=5.0)
    )
    assert build_scheduler(cfg).skip_hopeless is True


def test_skip_hopeless_leaves_the_hopeless_clients_memory_cap_out_too_and_judges_them_at_their_own_lowest_rank():
    # client 1 is hopeless (20 s of compute against 10 s) and can hold rank 4 only: the others' common rank is 16,
    # and client 1 trains at its own cap
    clients = Clients.of([0, 1], max_rank=[16, 4], time_intercept=[1.0, 20.0], time_per_rank=[0.1, 1.0])
    skip = UniformScheduler(r_min=2, r_max=16, deadline=10.0, skip_hopeless=True)
    assert skip.assign(clients).tolist() == [16, 4]
    # a client whose memory holds only rank 1 (below r_min 4) is judged at rank 1: 8 + 1 = 9 s fits 10 s
    fits_low = Clients.of([0, 1], max_rank=[16, 1], time_intercept=[1.0, 8.0], time_per_rank=[0.1, 1.0])
    low = UniformScheduler(r_min=4, r_max=16, deadline=10.0, skip_hopeless=True)
    assert not low._hopeless(fits_low).any()


@pytest.mark.parametrize(
    "deadline, policy, message",
    [
        (None, "drop", "needs a round deadline"),
        (5.0, "wait", "under straggler_policy wait"),
    ],
)
def test_skip_hopeless_without_a_deadline_or_under_wait_is_refused_naming_the_key(
    tiny_config, deadline, policy, message
):
    from fedranklite.config.schema import ConfigError

    sections = {
        "federation": {"scheduler": {"type": "uniform", "skip_hopeless": True}},
        "deadline": {"seconds": deadline, "straggler_policy": policy},
    }
    with pytest.raises(ConfigError, match=f"federation.scheduler.skip_hopeless: {message}"):
        tiny_config(**sections)
    sections["deadline"]["straggler_policy"] = "use_partial"
    if deadline is not None:
        assert tiny_config(**sections).federation.scheduler.skip_hopeless is True
