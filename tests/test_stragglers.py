"""stragglers.py: each deadline policy, as documented, with and without a deadline."""

from __future__ import annotations

import numpy as np
import pytest

from fedranklite.federation.stragglers import STRAGGLER_POLICIES

# Five clients, deadline 10 s:
#   0: finished at 4 s                      (on time)
#   1: finished at 10 s                     (exactly at the deadline: on time)
#   2: stopped at 9.5 s, did 3 of 5 steps   (partial, within the deadline)
#   3: stopped at 9 s before any step       (fit nothing)
#   4: finished at 14 s                     (late: only possible when nobody stops it)
SIM = [4.0, 10.0, 9.5, 9.0, 14.0]
FINISHED = [True, True, False, False, True]
TRAINED = [True, True, True, False, True]
DEADLINE = 10.0


def resolve(policy, sim=SIM, finished=FINISHED, trained=TRAINED, deadline=DEADLINE):
    return STRAGGLER_POLICIES[policy]().resolve(np.array(sim), np.array(finished), np.array(trained), deadline)


def test_registry_and_stop_flags():
    assert set(STRAGGLER_POLICIES) == {"drop", "wait", "use_partial"}
    assert STRAGGLER_POLICIES["drop"].stops_at_deadline is True
    assert STRAGGLER_POLICIES["use_partial"].stops_at_deadline is True
    assert STRAGGLER_POLICIES["wait"].stops_at_deadline is False
    with pytest.raises(KeyError):
        STRAGGLER_POLICIES["ignore"]


@pytest.mark.parametrize("policy", ["drop", "wait", "use_partial"])
def test_no_deadline_everyone_who_trained_counts(policy):
    out = resolve(policy, deadline=None)
    assert out.accepted.tolist() == [True, True, True, False, True]
    assert out.straggler.tolist() == [False] * 5
    assert out.round_time == pytest.approx(14.0)  # the slowest client


def test_drop_with_deadline():
    out = resolve("drop")
    # stragglers: unfinished (2, 3) or late (4)
    assert out.straggler.tolist() == [False, False, True, True, True]
    assert out.accepted.tolist() == [True, True, False, False, False]
    assert out.round_time == pytest.approx(DEADLINE)


def test_drop_everyone_on_time_round_is_slowest():
    out = resolve("drop", sim=[3.0, 7.5], finished=[True, True], trained=[True, True])
    assert out.straggler.tolist() == [False, False]
    assert out.accepted.tolist() == [True, True]
    assert out.round_time == pytest.approx(7.5)


def test_drop_late_but_finished_client_is_dropped():
    out = resolve("drop", sim=[3.0, 10.5], finished=[True, True], trained=[True, True])
    assert out.straggler.tolist() == [False, True]
    assert out.accepted.tolist() == [True, False]
    assert out.round_time == pytest.approx(10.0)


def test_wait_with_deadline():
    out = resolve("wait")
    # nobody discarded (except a client with no step to contribute), round = slowest,
    # but clients past the deadline or unfinished are stragglers (the round is not compliant)
    assert out.accepted.tolist() == [True, True, True, False, True]
    assert out.straggler.tolist() == [False, False, True, True, True]
    assert out.round_time == pytest.approx(14.0)


def test_wait_all_in_time_is_compliant():
    out = resolve("wait", sim=[3.0, 9.0], finished=[True, True], trained=[True, True])
    assert not out.straggler.any()
    assert out.accepted.all()
    assert out.round_time == pytest.approx(9.0)


def test_use_partial_with_deadline():
    out = resolve("use_partial")
    # partial client 2 contributes; 3 trained nothing; 4 was past the deadline
    assert out.accepted.tolist() == [True, True, True, False, False]
    assert out.straggler.tolist() == [False, False, True, True, True]
    assert out.round_time == pytest.approx(DEADLINE)  # min(slowest 14, deadline 10)


def test_use_partial_round_ends_when_last_partial_client_reports():
    # everyone stops before the deadline: the round lasts until the slowest report (9.5 s)
    out = resolve("use_partial", sim=[4.0, 9.5], finished=[True, False], trained=[True, True])
    assert out.accepted.tolist() == [True, True]
    assert out.straggler.tolist() == [False, True]
    assert out.round_time == pytest.approx(9.5)


@pytest.mark.parametrize("policy", ["drop", "wait", "use_partial"])
def test_empty_round(policy):
    out = resolve(policy, sim=[], finished=[], trained=[])
    assert out.accepted.size == 0 and out.straggler.size == 0
    assert out.round_time == 0.0


@pytest.mark.parametrize("policy", ["drop", "wait", "use_partial"])
def test_outputs_are_bool_arrays_and_inputs_untouched(policy):
    trained = np.array(TRAINED)
    out = STRAGGLER_POLICIES[policy]().resolve(np.array(SIM), np.array(FINISHED), trained, DEADLINE)
    assert out.accepted.dtype == bool and out.straggler.dtype == bool
    out.accepted[:] = False
    assert trained.tolist() == TRAINED
