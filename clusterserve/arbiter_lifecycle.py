"""The arbiter's states, what each accepts, and where each event takes it.

``TABLE`` is the whole of it.  For every state, it lists the signals,
conditions and timers that state acts on, the ``Arbiter`` method that acts
(``_on_`` + the name), and the states that method may lead to (``STAY``: the
same one).  An event that a state's row does not list is ignored in that
state, with one log line.  ``Arbiter.fire`` runs every transition, and checks
that the method led where the table says.

A state is a small frozen object; the ones that need data carry it (the
reload in progress, the new arbiter being started, the stop's deadline), so
no field of the arbiter can say "reloading" while another says "stopping".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar


class Event(enum.Enum):
    TERM = "SIGTERM"
    INT = "SIGINT"
    QUIT = "SIGQUIT"
    HUP = "SIGHUP"
    USR1 = "SIGUSR1"
    USR2 = "SIGUSR2"
    WINCH = "SIGWINCH"
    TTIN = "SIGTTIN"
    TTOU = "SIGTTOU"
    SCALE = "ctl scale"
    ALL_READY = "every worker is ready"
    BOOT_FAILED = "a worker cannot load the app, and none ever could"
    RELOAD_READY = "the new generation is ready"
    RELOAD_FAILED = "a worker of the new generation died before it was ready"
    SUCCESSOR_READY = "the new arbiter is ready"
    SUCCESSOR_FAILED = "the new arbiter exited before it was ready"
    LISTENERS_GONE = "a listening socket is gone"
    NO_WORKERS = "no worker is left"
    DEADLINE = "the stop's deadline passed"


@dataclass(frozen=True)
class Starting:
    """Forking the first generation; serving as soon as a worker is ready."""

    name: ClassVar[str] = "starting"


@dataclass(frozen=True)
class Running:
    name: ClassVar[str] = "running"


@dataclass(frozen=True)
class Reloading:
    """A HUP: a new generation boots beside the old one."""

    name: ClassVar[str] = "reloading"
    reload: Any  # arbiter.Reload: the generation booting, and what to go back to if it fails


@dataclass(frozen=True)
class Upgrading:
    """A USR2: a new arbiter boots on the same sockets."""

    name: ClassVar[str] = "upgrading"
    successor: Any  # upgrade.Successor


@dataclass(frozen=True)
class HandedOver:
    """The new arbiter serves; this one's workers leave, and it waits for TERM."""

    name: ClassVar[str] = "handed over"


@dataclass(frozen=True)
class StoppingGracefully:
    name: ClassVar[str] = "stopping"
    deadline: float  # then SIGKILL


@dataclass(frozen=True)
class Interrupted:
    """A SIGINT (Ctrl-C): a graceful stop, bounded; at the deadline, a fast stop."""

    name: ClassVar[str] = "interrupted"
    deadline: float


@dataclass(frozen=True)
class StoppingFast:
    name: ClassVar[str] = "halting"
    deadline: float  # then SIGKILL


@dataclass(frozen=True)
class Killing:
    """The stop timed out and SIGKILL went out; at the deadline, exit regardless."""

    name: ClassVar[str] = "killing"
    deadline: float


@dataclass(frozen=True)
class Done:
    name: ClassVar[str] = "done"


State = (Starting | Running | Reloading | Upgrading | HandedOver | StoppingGracefully | Interrupted
         | StoppingFast | Killing | Done)
STAY = "stay"  # a transition that keeps the state it is in

E = Event
_STOP = {E.TERM: ("stop_gracefully", (StoppingGracefully,)), E.INT: ("interrupt", (Interrupted,)),
         E.QUIT: ("stop_fast", (StoppingFast,))}
_SERVE = {**_STOP, E.LISTENERS_GONE: ("lost_listeners", (StoppingGracefully,)),
          E.TTIN: ("one_more_worker", STAY), E.TTOU: ("one_fewer_worker", STAY),
          E.SCALE: ("scale", STAY), E.USR1: ("reopen_logs", STAY)}
_STOPPED = {E.USR1: ("reopen_logs", STAY), E.NO_WORKERS: ("done", (Done,)),
            E.DEADLINE: ("kill_the_rest", (Killing,)), E.SUCCESSOR_READY: ("leave_to_successor", STAY)}

TABLE: dict[type[State], dict[Event, tuple[str, Any]]] = {
    Starting: {**_SERVE, E.HUP: ("reload", (Reloading, STAY)),
               E.ALL_READY: ("ready", (Running,)), E.BOOT_FAILED: ("unloadable", (StoppingFast,))},
    Running: {**_SERVE, E.HUP: ("reload", (Reloading, STAY)),
              E.USR2: ("upgrade", (Upgrading, STAY)), E.WINCH: ("stop_every_worker", STAY)},
    Reloading: {**_SERVE, E.HUP: ("reload", (Reloading, STAY)),
                E.RELOAD_READY: ("reload_ready", (Running,)),
                E.RELOAD_FAILED: ("reload_failed", (Running, Starting))},
    Upgrading: {**_SERVE, E.SUCCESSOR_READY: ("hand_over", (HandedOver,)),
                E.SUCCESSOR_FAILED: ("upgrade_failed", (Running,))},
    HandedOver: {**_STOP, E.USR1: ("reopen_logs", STAY), E.HUP: ("refuse_handed_over", STAY),
                 E.TTIN: ("refuse_handed_over", STAY), E.TTOU: ("refuse_handed_over", STAY)},
    StoppingGracefully: {**_STOPPED, E.INT: ("interrupt", (Interrupted,)),
                         E.QUIT: ("stop_fast", (StoppingFast,))},
    Interrupted: {**_STOPPED, E.INT: ("stop_fast", (StoppingFast,)), E.QUIT: ("stop_fast", (StoppingFast,)),
                  E.DEADLINE: ("escalate", (StoppingFast,))},
    StoppingFast: _STOPPED,
    Killing: {E.NO_WORKERS: ("done", (Done,)), E.DEADLINE: ("give_up", (Done,))},
    Done: {},
}

# States in which the server serves: workers that die are replaced, and the housekeeping
# of a running server (heartbeats, memory, reloads, respawns) goes on.
SERVING = (Starting, Running, Reloading, Upgrading, HandedOver)
STOPPING = (StoppingGracefully, Interrupted, StoppingFast, Killing)


def accepts(state: State, event: Event) -> bool:
    return event in TABLE[type(state)]


def render() -> str:
    """The table as Markdown, one line per state, for docs/architecture.md (a unit test
    checks that the document shows what the code runs on)."""
    lines = ["| state | accepts: event → next state (method) |", "|---|---|"]
    for state_type, row in TABLE.items():
        grouped: dict[tuple[str, Any], list[str]] = {}
        for event, (action, targets) in row.items():
            grouped.setdefault((action, targets), []).append(event.value)
        cells = []
        for (action, targets), events in grouped.items():
            then = "same" if targets == STAY else " or ".join(
                "same" if t == STAY else t.name for t in targets)
            cells.append(f"{', '.join(events)} → {then} (`_on_{action}`)")
        lines.append(f"| {state_type.name} | {'; '.join(cells) or 'nothing: the arbiter exits'} |")
    return "\n".join(lines) + "\n"
