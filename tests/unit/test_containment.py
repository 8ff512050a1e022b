"""The Breaker, driven with a fake clock."""

import itertools
import logging

import pytest

from clusterserve.containment import MAX_BACKOFF, Breaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def breaker(caplog):
    caplog.set_level(logging.INFO, logger="test.breaker")
    clock = Clock()
    return Breaker(logging.getLogger("test.breaker"), clock), clock


def fail():
    raise OSError(24, "Too many open files")


def test_a_failing_event_is_logged_with_its_traceback_and_contained(breaker, caplog):
    b, _ = breaker
    assert b.event("a signal", fail) is False
    (record,) = caplog.records
    assert record.getMessage() == "a signal failed; the arbiter goes on" and record.exc_info


def test_the_same_failure_again_is_logged_once_more_then_not_until_it_works(breaker, caplog):
    b, clock = breaker
    runs = []

    def step():
        runs.append(clock.now)
        fail()

    for _ in range(200):
        b.periodic("starting a worker", step)
        clock.now += 0.1
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "starting a worker failed; the arbiter goes on"
    assert messages[1].startswith("starting a worker keeps failing (OSError: [Errno 24] Too many open files); "
                                  "retrying in 1s")
    assert len(messages) == 2
    gaps = [b - a for a, b in itertools.pairwise(runs[1:])]
    assert all(later >= earlier for earlier, later in itertools.pairwise(gaps))  # backing off
    assert len(runs) < 10
    b.periodic("starting a worker", lambda: None)  # not yet: backing off
    clock.now += MAX_BACKOFF
    assert b.periodic("starting a worker", lambda: None) is True
    assert caplog.records[-1].getMessage() == f"starting a worker works again (it failed {len(runs)} times in a row)"


def test_back_off_is_bounded(breaker):
    b, clock = breaker
    runs = []

    def step():
        runs.append(clock.now)
        fail()

    for _ in range(3000):
        b.periodic("s", step)
        clock.now += 1.0
    assert max(b - a for a, b in itertools.pairwise(runs)) <= MAX_BACKOFF + 1.0


def test_a_different_failure_is_logged_in_full(breaker, caplog):
    b, _ = breaker
    b.event("a message", fail)
    b.event("a message", fail)
    b.event("a message", lambda: {}["missing"])
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == messages[2] == "a message failed; the arbiter goes on"
    assert caplog.records[2].exc_info[0] is KeyError


def test_events_are_never_skipped(breaker):
    b, _ = breaker
    calls = []
    for _ in range(5):
        b.event("e", lambda: (calls.append(1), fail()))
    assert len(calls) == 5
