"""The arbiter's decisions, driven without forking: a fake process table and a fake clock.

Every row of ``arbiter_lifecycle.TABLE`` has a scenario here (a test checks that
none is missing): the arbiter is brought into the row's state by the events a
real one would see, the row's event happens, and the state it lands in must be
the one the scenario expects (and one the table allows).  Hypothesis then plays
random sequences of signals, worker messages, exits and time, and checks the
invariants: no worker told to go is without a deadline, the arbiter never stops
because of a worker (but for a first generation that cannot load the app), the
worker count comes back to its target, a stop always ends, and no step of
the arbiter raises.  The seed is printed in pytest's header; ``pytest
--hypothesis-seed N`` replays a run.
"""

from __future__ import annotations

import os
import signal
import socket
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterserve import logs
from clusterserve.arbiter import GIVE_UP_AFTER_KILL, STOP_GRACE, Arbiter
from clusterserve.arbiter_lifecycle import (
    STOPPING,
    TABLE,
    Done,
    Event,
    HandedOver,
    Interrupted,
    Killing,
    Reloading,
    Running,
    Starting,
    StoppingFast,
    StoppingGracefully,
    Upgrading,
)
from clusterserve.channel import ABORT, BOOT_ERROR, HEARTBEAT, READY, RETIRE, Message
from clusterserve.config import load_config
from clusterserve.sockets import Listener, parse_address
from clusterserve.upgrade import READY as UPGRADE_READY
from clusterserve.upgrade import Successor
from clusterserve.worker_lifecycle import WITH_DEADLINE, WorkerState

ARGV = ["tests.apps.basic:app", "-w", "2", "--timeout", "5", "--graceful-timeout", "10"]
MIB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProcesses:
    """Children that exit when told to, unless deaf (then only SIGKILL) or unkillable."""

    def __init__(self) -> None:
        self.next_pid = 1000
        self.alive: set[int] = set()
        self.exits: deque[tuple[int, int]] = deque()
        self.sent: list[tuple[int, int]] = []
        self.deaf: set[int] = set()
        self.unkillable: set[int] = set()
        self.pipes: list[int] = []  # the write ends of successors' ready pipes

    def fork(self) -> int:
        self.next_pid += 1
        self.alive.add(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, sig: int) -> None:
        if pid not in self.alive:
            raise ProcessLookupError(pid)
        self.sent.append((pid, sig))
        if sig == signal.SIGKILL and pid not in self.unkillable:
            self.exit(pid, -signal.SIGKILL)
        elif sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGABRT) and pid not in self.deaf | self.unkillable:
            self.exit(pid, 1 if sig == signal.SIGABRT else 0)

    def exit(self, pid: int, code: int) -> None:
        if pid in self.alive:
            self.alive.discard(pid)
            self.exits.append((pid, code))

    def reap(self) -> tuple[int, int] | None:
        return self.exits.popleft() if self.exits else None

    def resident_bytes(self, pid: int) -> int | None:
        return 20 * MIB if pid in self.alive else None

    def start_successor(self, listeners, argv, directory, before_exec) -> Successor:
        read_end, write_end = os.pipe()
        self.pipes.append(write_end)
        return Successor(self.fork(), read_end)


class Driver:
    """An arbiter, its fakes, and the events a real one would see."""

    def __init__(self, argv: list[str] = ARGV) -> None:
        self.clock = Clock()
        self.procs = FakeProcesses()
        self.arbiter = Arbiter(load_config(argv), argv, processes=self.procs, clock=self.clock)
        self.arbiter._spawn_missing()
        self.successor: Successor | None = None
        self.stop_sent = False

    def close(self) -> None:
        for handle in self.arbiter.workers.values():
            handle.channel.close()
        for reaped in self.arbiter.reaped:
            reaped.handle.channel.close()
        for listener in self.arbiter.listeners:
            listener.sock.close()
        for fd in self.procs.pipes:
            os.close(fd)
        if isinstance(self.arbiter.state, Upgrading):
            os.close(self.arbiter.state.successor.ready_pipe)
        self.arbiter.poller.close()

    @property
    def state(self):
        return self.arbiter.state

    def live(self):
        return sorted(self.arbiter.workers.values(), key=lambda h: h.age)

    def signal(self, sig: int) -> None:
        self.stop_sent = self.stop_sent or sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        self.arbiter._on_signal(sig)
        if isinstance(self.state, Upgrading):
            self.successor = self.state.successor

    def message(self, handle, kind: str, **fields) -> None:
        self.arbiter._on_message(handle, Message(kind, fields))

    def ready(self, *handles) -> None:
        for handle in handles or self.live():
            if handle.state is WorkerState.BOOTING:
                self.message(handle, READY, interface="wsgi")

    def heartbeats(self) -> None:
        for handle in self.live():
            self.message(handle, HEARTBEAT, requests=0, accepted=0, open=0, in_flight=0, stats=None)

    def tick(self, seconds: float = 0.0) -> None:
        self.clock.now += seconds
        self.arbiter._tick()

    def successor_ready(self) -> None:
        assert self.successor is not None
        os.write(self.procs.pipes[-1], UPGRADE_READY)
        self.arbiter._on_successor(self.successor)

    def all_deaf(self) -> None:
        self.procs.deaf |= {h.pid for h in self.live()}

    def boot_failure(self, handle) -> None:
        self.message(handle, BOOT_ERROR, error="ImportError: no module named 'app'")
        self.procs.exit(handle.pid, 3)
        self.tick()

    def new_generation(self):
        return [h for h in self.live() if h.generation == self.arbiter.generation and h.counted]


@pytest.fixture(autouse=True)
def quiet_logging_setup(monkeypatch):
    """A HUP sets the error log up again: here that would rewire the test process's logging."""
    monkeypatch.setattr(logs, "configure", lambda cfg: None)


@pytest.fixture
def driver():
    made = Driver()
    yield made
    made.close()


# -- the states, reached as a real arbiter reaches them -----------------------------

def starting(d: Driver) -> None:
    assert isinstance(d.state, Starting)


def running(d: Driver) -> None:
    d.ready()
    d.tick()
    assert isinstance(d.state, Running)


def reloading(d: Driver) -> None:
    running(d)
    d.signal(signal.SIGHUP)
    assert isinstance(d.state, Reloading)


def upgrading(d: Driver) -> None:
    running(d)
    d.signal(signal.SIGUSR2)
    assert isinstance(d.state, Upgrading)


def handed_over(d: Driver) -> None:
    upgrading(d)
    d.successor_ready()
    assert isinstance(d.state, HandedOver)


def stopping(d: Driver) -> None:
    upgrading(d)  # with a new arbiter still on its way, for the row that needs one
    d.all_deaf()
    d.signal(signal.SIGTERM)
    assert isinstance(d.state, StoppingGracefully)


def interrupted(d: Driver) -> None:
    upgrading(d)
    d.all_deaf()
    d.signal(signal.SIGINT)
    assert isinstance(d.state, Interrupted)


def halting(d: Driver) -> None:
    upgrading(d)
    d.all_deaf()
    d.signal(signal.SIGQUIT)
    assert isinstance(d.state, StoppingFast)


def killing(d: Driver) -> None:
    running(d)
    d.procs.unkillable |= {h.pid for h in d.live()}
    d.signal(signal.SIGTERM)
    d.tick(11)
    assert isinstance(d.state, Killing)


# -- the events, as a real arbiter sees them -------------------------------------------

def lose_listener(d: Driver) -> None:
    sock = socket.socket()
    d.arbiter.listeners.append(Listener(sock, parse_address("127.0.0.1:0")))
    sock.close()
    d.tick()


def reload_fails(d: Driver) -> None:
    d.boot_failure(d.new_generation()[0])


def new_generation_ready(d: Driver) -> None:
    d.ready(*d.new_generation())
    d.tick()


def successor_exits(d: Driver) -> None:
    d.procs.exit(d.successor.pid, 1)
    d.tick()


def every_worker_exits(d: Driver) -> None:
    for handle in d.live():
        d.procs.exit(handle.pid, 0)
    d.tick()


def deadline(d: Driver) -> None:
    d.tick(d.state.deadline - d.clock.now + 0.1)


def signal_trigger(sig: int):
    return lambda d: d.signal(sig)


def workers_wanted(count: int):
    return lambda d: d.arbiter.num_workers == count


def nothing_forked(d: Driver) -> bool:
    d.tick(1)
    return d.arbiter.num_workers == 0 and not d.live()


E = Event
SIGNALS = {E.TERM: signal.SIGTERM, E.INT: signal.SIGINT, E.QUIT: signal.SIGQUIT, E.HUP: signal.SIGHUP,
           E.USR1: signal.SIGUSR1, E.USR2: signal.SIGUSR2, E.WINCH: signal.SIGWINCH,
           E.TTIN: signal.SIGTTIN, E.TTOU: signal.SIGTTOU}
TRIGGERS = {**{event: signal_trigger(sig) for event, sig in SIGNALS.items()},
            E.SCALE: lambda d: d.arbiter.scale(4),
            E.ALL_READY: running,
            E.BOOT_FAILED: lambda d: d.boot_failure(d.live()[0]),
            E.RELOAD_READY: new_generation_ready,
            E.RELOAD_FAILED: reload_fails,
            E.SUCCESSOR_READY: lambda d: d.successor_ready(),
            E.SUCCESSOR_FAILED: successor_exits,
            E.LISTENERS_GONE: lose_listener,
            E.NO_WORKERS: every_worker_exits,
            E.DEADLINE: deadline}
SETUPS = {Starting: starting, Running: running, Reloading: reloading, Upgrading: upgrading,
          HandedOver: handed_over, StoppingGracefully: stopping, Interrupted: interrupted,
          StoppingFast: halting, Killing: killing}
SERVING_ROWS = {E.TERM: StoppingGracefully, E.INT: Interrupted, E.QUIT: StoppingFast,
                E.LISTENERS_GONE: StoppingGracefully, E.TTIN: None, E.TTOU: None, E.SCALE: None,
                E.USR1: None}
CHECKS = {E.TTIN: workers_wanted(3), E.TTOU: workers_wanted(1), E.SCALE: workers_wanted(4)}

# (state, event): the state it must land in (None: the same one), and what must hold then.
EXPECTED: dict[tuple[type, Event], type | None] = {
    **{(state, event): then for state in (Starting, Running, Reloading, Upgrading)
       for event, then in SERVING_ROWS.items()},
    (Starting, E.HUP): Reloading, (Starting, E.ALL_READY): Running, (Starting, E.BOOT_FAILED): StoppingFast,
    (Running, E.HUP): Reloading, (Running, E.USR2): Upgrading, (Running, E.WINCH): None,
    (Reloading, E.HUP): Reloading, (Reloading, E.RELOAD_READY): Running,
    (Reloading, E.RELOAD_FAILED): Running,
    (Upgrading, E.SUCCESSOR_READY): HandedOver, (Upgrading, E.SUCCESSOR_FAILED): Running,
    (HandedOver, E.TERM): StoppingGracefully, (HandedOver, E.INT): Interrupted,
    (HandedOver, E.QUIT): StoppingFast, (HandedOver, E.USR1): None, (HandedOver, E.HUP): None,
    (HandedOver, E.TTIN): None, (HandedOver, E.TTOU): None,
    **{(state, event): then for state in (StoppingGracefully, Interrupted, StoppingFast)
       for event, then in {E.USR1: None, E.NO_WORKERS: Done, E.DEADLINE: Killing,
                           E.SUCCESSOR_READY: None}.items()},
    (StoppingGracefully, E.INT): Interrupted, (StoppingGracefully, E.QUIT): StoppingFast,
    (Interrupted, E.INT): StoppingFast, (Interrupted, E.QUIT): StoppingFast,
    (Interrupted, E.DEADLINE): StoppingFast,
    (Killing, E.NO_WORKERS): Done, (Killing, E.DEADLINE): Done,
}
CHECKS_BY_ROW = {**{(state, event): check for state in (Starting, Running, Reloading, Upgrading)
                    for event, check in CHECKS.items()},
                 (Running, E.WINCH): nothing_forked,
                 (HandedOver, E.TTIN): nothing_forked, (HandedOver, E.HUP): nothing_forked}
ROWS = [(state, event) for state, row in TABLE.items() for event in row]


def test_every_row_of_the_table_has_a_scenario():
    assert set(EXPECTED) == set(ROWS)


@pytest.mark.parametrize(("state", "event"), ROWS, ids=[f"{s.name}-{e.name}" for s, e in ROWS])
def test_each_row_of_the_table(driver, state, event):
    SETUPS[state](driver)
    TRIGGERS[event](driver)
    expected = EXPECTED[(state, event)] or state
    assert type(driver.state) is expected
    check = CHECKS_BY_ROW.get((state, event))
    assert check is None or check(driver)


IGNORED = [(state, event) for state in SETUPS for event in SIGNALS if event not in TABLE[state]]


@pytest.mark.parametrize(("state", "event"), IGNORED, ids=[f"{s.name}-{e.name}" for s, e in IGNORED])
def test_a_signal_a_state_does_not_list_changes_nothing(driver, state, event):
    SETUPS[state](driver)
    before, workers = driver.state, {h.pid: h.state for h in driver.live()}
    TRIGGERS[event](driver)
    assert driver.state is before
    assert {h.pid: h.state for h in driver.live()} == workers


def test_a_reload_begun_while_starting_announces_readiness_or_goes_back_to_starting(driver):
    driver.signal(signal.SIGHUP)
    assert isinstance(driver.state, Reloading) and driver.state.reload.announce
    reload_fails(driver)
    assert isinstance(driver.state, Starting)
    driver.signal(signal.SIGHUP)
    new_generation_ready(driver)
    assert isinstance(driver.state, Running)


def test_a_worker_aborted_and_deaf_is_killed_at_its_deadline(driver):
    running(driver)
    stuck = driver.live()[0]
    driver.procs.deaf.add(stuck.pid)
    driver.message(stuck, ABORT, reason="stuck_request", detail="a request has run for more than 5s")
    assert stuck.state is WorkerState.ABORTED and stuck.kill_at == driver.clock.now + 2.0
    driver.tick(1.9)
    assert (stuck.pid, signal.SIGKILL) not in driver.procs.sent
    driver.tick(0.2)
    assert (stuck.pid, signal.SIGKILL) in driver.procs.sent
    driver.tick()
    assert stuck.pid not in driver.arbiter.workers and len(driver.live()) == 2  # replaced


def test_a_worker_told_to_stop_that_ignores_it_is_killed_at_graceful_timeout_plus_grace(driver):
    running(driver)
    oldest = driver.live()[0]
    driver.procs.deaf.add(oldest.pid)
    driver.signal(signal.SIGTTOU)
    assert oldest.state is WorkerState.STOPPING and oldest.kill_at == driver.clock.now + 10 + STOP_GRACE
    driver.tick(10 + STOP_GRACE)
    assert (oldest.pid, signal.SIGKILL) in driver.procs.sent


def test_a_retiring_worker_is_stopped_once_its_replacement_is_ready(driver):
    running(driver)
    old = driver.live()[0]
    driver.message(old, RETIRE, reason="max_requests", detail="served 1000 requests")
    assert old.state is WorkerState.RETIRING and len(driver.live()) == 3
    driver.tick()
    assert old.state is WorkerState.RETIRING  # its replacement is still booting
    driver.ready()
    driver.tick()
    assert (old.pid, signal.SIGTERM) in driver.procs.sent and old.pid not in driver.procs.alive


# -- random sequences -------------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("signal"), st.sampled_from([signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                                                   signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
                                                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH])),
    st.tuples(st.just("ready"), st.integers(0, 7)),
    st.tuples(st.just("heartbeats")),
    st.tuples(st.just("exit"), st.integers(0, 7), st.sampled_from([0, 1, 3, -9, -11, -40])),
    st.tuples(st.just("retire"), st.integers(0, 7)),
    st.tuples(st.just("abort"), st.integers(0, 7)),
    st.tuples(st.just("garbage"), st.integers(0, 7)),
    st.tuples(st.just("boot_error"), st.integers(0, 7)),
    st.tuples(st.just("deaf"), st.integers(0, 7)),
    st.tuples(st.just("successor"), st.sampled_from(["ready", "exit"])),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.3, 1.0, 3.0, 12.0])),
)


def play(d: Driver, step: tuple) -> None:
    kind, *args = step
    live = d.live()
    handle = live[args[0] % len(live)] if live and kind in (
        "ready", "exit", "retire", "abort", "garbage", "boot_error", "deaf") else None
    if kind == "signal":
        d.signal(args[0])
    elif kind == "heartbeats":
        d.heartbeats()
    elif kind == "tick":
        d.tick(args[0])
    elif kind == "successor":
        if isinstance(d.state, Upgrading):
            d.successor_ready() if args[0] == "ready" else successor_exits(d)
    elif handle is None:
        return
    elif kind == "ready":
        d.ready(handle)
    elif kind == "exit":
        d.procs.exit(handle.pid, args[1])
    elif kind == "retire":
        d.message(handle, RETIRE, reason="max_requests", detail="served 3 requests")
    elif kind == "abort":
        d.message(handle, ABORT, reason="stuck_request", detail="a request has run for more than 5s")
    elif kind == "garbage":
        d.arbiter._distrust(handle, "'heartbeat' field 'requests' is 'many'")
    elif kind == "boot_error":
        d.message(handle, BOOT_ERROR, error="RuntimeError: broken")
        d.procs.exit(handle.pid, 3)
    elif kind == "deaf":
        d.procs.deaf.add(handle.pid)


def check_always(d: Driver) -> None:
    assert d.arbiter.breaker.failures == 0, "a step of the arbiter raised (see the captured log)"
    for handle in d.live():
        assert handle.state is not WorkerState.GONE
        if handle.state in WITH_DEADLINE:
            assert handle.kill_at is not None, f"worker {handle.age} told to go without a deadline"
    if isinstance(d.state, (*STOPPING, Done)) and not d.stop_sent:
        # The one stop a worker can cause: a first generation that cannot load the app.
        assert d.arbiter.exit_code == 3 and not d.arbiter.ever_ready, f"stopped by a worker: {d.state}"


def settle(d: Driver) -> None:
    """Cooperative workers and time: the count must come back to the target."""
    d.procs.deaf.clear()
    for _ in range(120):
        d.ready()
        d.heartbeats()
        d.tick(1.0)
        check_always(d)
        if isinstance(d.state, (*STOPPING, Done)):
            return  # an exit judged meanwhile: a first generation that cannot load the app
    counted = [h for h in d.live() if h.counted]
    assert len(counted) == d.arbiter.num_workers, [(h.age, h.state, h.counted) for h in d.live()]
    assert all(h.state is WorkerState.READY for h in counted)
    assert len(d.live()) == len(counted), [(h.age, h.state) for h in d.live()]


def stop_ends(d: Driver, stubborn: bool) -> None:
    if stubborn:  # one worker that not even SIGKILL moves (a D-state process)
        d.procs.unkillable |= {h.pid for h in d.live()[:1]}
    d.signal(signal.SIGTERM)
    for _ in range(int(10 + STOP_GRACE + GIVE_UP_AFTER_KILL) + 3):
        if isinstance(d.state, Done):
            return
        d.tick(1.0)
    assert isinstance(d.state, Done), d.state


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=40), stubborn=st.booleans())
def test_random_sequences_keep_the_invariants(steps, stubborn):
    d = Driver()
    try:
        for step in steps:
            play(d, step)
            check_always(d)
        if not isinstance(d.state, (*STOPPING, Done)):
            settle(d)
            check_always(d)
        if not isinstance(d.state, Done):
            stop_ends(d, stubborn)
    finally:
        d.close()


def test_an_old_worker_that_retires_during_a_reload_is_not_replaced_twice(driver):
    """Found by the random sequences: its replacement came on top of the new generation."""
    running(driver)
    driver.signal(signal.SIGHUP)
    old = driver.live()[0]
    driver.message(old, RETIRE, reason="max_requests", detail="served 3 requests")
    assert len(driver.new_generation()) == 2
    new_generation_ready(driver)
    driver.tick()
    assert isinstance(driver.state, Running)
    assert sorted(h.age for h in driver.live()) == [3, 4]
