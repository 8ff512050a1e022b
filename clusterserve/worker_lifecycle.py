"""A worker's life as the arbiter sees it: its states, and what moves it from one to the next.

``TRANSITIONS`` is the whole of it: an event that a state's row does not list
is ignored in that state (a ``ready`` from a worker already told to stop, a
second SIGTERM).  The signal each event sends, and the deadline it sets, are
in ``SIGNALS``; the arbiter applies both in ``Arbiter._move``.

Every state a worker enters by being told to go (stopping, aborted) comes with
a deadline, after which it gets SIGKILL: nothing the worker does can keep it
alive once the arbiter has decided that it goes.
"""

from __future__ import annotations

import enum
import signal


class WorkerState(enum.Enum):
    BOOTING = "booting"  # forked; the app is not loaded yet
    READY = "ready"  # serving
    RETIRING = "retiring"  # serving until its replacement is ready, then told to stop
    STOPPING = "stopping"  # SIGTERM (or SIGQUIT) sent; SIGKILL at its deadline
    ABORTED = "aborted"  # SIGABRT sent (no heartbeat, a stuck request); SIGKILL at its deadline
    KILLED = "killed"  # SIGKILL sent
    GONE = "gone"  # reaped


class WorkerEvent(enum.Enum):
    READY = "ready"  # its ready message
    REPLACE = "replace"  # it asked to retire, grew past max_worker_memory, or sent garbage
    REPLACED = "replaced"  # enough other workers are ready: it may stop now
    STOP = "stop"  # told to stop gracefully (TTOU, a reload, a graceful stop)
    HALT = "halt"  # told to stop at once (a fast stop)
    ABORT = "abort"  # no heartbeat for `timeout`, or it asked to be aborted
    DEADLINE = "deadline"  # still alive at its kill deadline
    EXIT = "exit"  # reaped


S, E = WorkerState, WorkerEvent
_LEAVE = {E.STOP: S.STOPPING, E.HALT: S.STOPPING, E.ABORT: S.ABORTED, E.EXIT: S.GONE}

TRANSITIONS: dict[WorkerState, dict[WorkerEvent, WorkerState]] = {
    S.BOOTING: {E.READY: S.READY, E.REPLACE: S.RETIRING, **_LEAVE},
    S.READY: {E.REPLACE: S.RETIRING, **_LEAVE},
    S.RETIRING: {E.REPLACED: S.STOPPING, **_LEAVE},
    S.STOPPING: {E.HALT: S.STOPPING, E.ABORT: S.ABORTED, E.DEADLINE: S.KILLED, E.EXIT: S.GONE},
    S.ABORTED: {E.DEADLINE: S.KILLED, E.EXIT: S.GONE},
    S.KILLED: {E.EXIT: S.GONE},
    S.GONE: {},
}

# What the arbiter sends on each event, if anything, and which deadline it then sets
# ("graceful": graceful_timeout plus a grace; "fast": the fast stop's; "abort": 2 s).
SIGNALS: dict[WorkerEvent, tuple[int, str | None]] = {
    E.STOP: (signal.SIGTERM, "graceful"),
    E.REPLACED: (signal.SIGTERM, "graceful"),
    E.HALT: (signal.SIGQUIT, "fast"),
    E.ABORT: (signal.SIGABRT, "abort"),
    E.DEADLINE: (signal.SIGKILL, None),
}

# States in which a worker is alive and has not been told to go.
STAYING = frozenset({S.BOOTING, S.READY})
# States that carry a kill deadline.
WITH_DEADLINE = frozenset({S.STOPPING, S.ABORTED})


def next_state(state: WorkerState, event: WorkerEvent) -> WorkerState | None:
    """Where ``event`` takes a worker in ``state``; None if that state ignores it."""
    return TRANSITIONS[state].get(event)


def render() -> str:
    """The table as Markdown, for docs/architecture.md (a unit test keeps them the same)."""
    lines = ["| state | accepts: event → next state |", "|---|---|"]
    for state, row in TRANSITIONS.items():
        grouped: dict[WorkerState, list[str]] = {}
        for event, target in row.items():
            grouped.setdefault(target, []).append(event.value)
        cells = [f"{', '.join(events)} → {target.value}" for target, events in grouped.items()]
        lines.append(f"| {state.value} | {'; '.join(cells) or 'nothing'} |")
    return "\n".join(lines) + "\n"
