"""The worker transition table: every state has a way out, and every way out has a deadline."""

import pytest

from clusterserve.worker_lifecycle import (
    SIGNALS,
    STAYING,
    TRANSITIONS,
    WITH_DEADLINE,
    WorkerEvent,
    WorkerState,
    next_state,
)

LIVE = [state for state in WorkerState if state is not WorkerState.GONE]


def test_every_state_has_a_row_and_only_gone_is_final():
    assert set(TRANSITIONS) == set(WorkerState)
    assert TRANSITIONS[WorkerState.GONE] == {}
    for state in LIVE:
        assert next_state(state, WorkerEvent.EXIT) is WorkerState.GONE


@pytest.mark.parametrize("state", sorted(STAYING, key=lambda s: s.value))
def test_a_serving_worker_can_be_told_to_go_every_way(state):
    assert next_state(state, WorkerEvent.STOP) is WorkerState.STOPPING
    assert next_state(state, WorkerEvent.HALT) is WorkerState.STOPPING
    assert next_state(state, WorkerEvent.ABORT) is WorkerState.ABORTED
    assert next_state(state, WorkerEvent.REPLACE) is WorkerState.RETIRING


def test_every_event_that_sets_a_deadline_leads_to_a_state_that_has_one():
    for state, row in TRANSITIONS.items():
        for event, target in row.items():
            _, deadline = SIGNALS.get(event, (None, None))
            assert (deadline is not None) == (target in WITH_DEADLINE), (state, event, target)


def test_a_deadline_always_ends_in_sigkill():
    for state in WITH_DEADLINE:
        assert next_state(state, WorkerEvent.DEADLINE) is WorkerState.KILLED
    assert TRANSITIONS[WorkerState.KILLED] == {WorkerEvent.EXIT: WorkerState.GONE}


def test_a_worker_never_goes_back():
    order = [WorkerState.BOOTING, WorkerState.READY, WorkerState.RETIRING, WorkerState.STOPPING,
             WorkerState.ABORTED, WorkerState.KILLED, WorkerState.GONE]
    for state, row in TRANSITIONS.items():
        for target in row.values():
            assert order.index(target) >= order.index(state), (state, target)


def test_a_worker_told_to_go_ignores_what_would_keep_it():
    for state in (WorkerState.STOPPING, WorkerState.ABORTED, WorkerState.KILLED):
        for event in (WorkerEvent.READY, WorkerEvent.REPLACE, WorkerEvent.REPLACED, WorkerEvent.STOP):
            assert next_state(state, event) is None
