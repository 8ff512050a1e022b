"""Why a worker stopped, said the same way in every log line that mentions it.

The arbiter records the reason when it decides to stop a worker (or the
worker asks to retire); a worker that dies unasked gets its exit status as
the reason.  ``ExitReason`` values are short stable keys that a log parser
or a metric can count by; the detail is for people.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass


class ExitReason(enum.Enum):
    CRASH = "crash"  # killed by a signal the arbiter did not send, or exited on its own with code > 0
    EXIT = "exit"  # exited on its own with code 0
    TIMEOUT = "timeout"  # no heartbeat for `timeout` seconds: SIGABRT, then SIGKILL
    STUCK_REQUEST = "stuck_request"  # a request ran longer than `timeout`
    MAX_REQUESTS = "max_requests"
    MAX_WORKER_MEMORY = "max_worker_memory"
    RELOAD = "reload"  # retired by SIGHUP or `ctl reload` (its generation was replaced, or failed)
    SCALE_DOWN = "scale_down"  # retired by SIGTTOU or `ctl scale`
    BOOT_ERROR = "boot_error"
    STOP = "stop"  # the server stops (TERM, INT, QUIT, WINCH, the end of a USR2)
    BAD_MESSAGE = "bad_message"  # it sent the arbiter a malformed message: replaced, then stopped


# The reasons that mean a worker was replaced (counted as restarts by status and metrics).
RESTART_REASONS = frozenset(r.value for r in ExitReason) - {ExitReason.SCALE_DOWN.value,
                                                             ExitReason.STOP.value}


@dataclass(frozen=True)
class Why:
    reason: ExitReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value} ({self.detail})" if self.detail else self.reason.value


def signal_name(number: int) -> str:
    """``SIGSEGV``, ``SIGRTMIN+6``, or ``signal 99``: any number a process can die of.

    ``signal.Signals`` knows only the signals with a name of their own.
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN < number < signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"signal {number}"


def exit_status(code: int) -> str:
    """``code`` as os.waitstatus_to_exitcode gives it: negative for a signal."""
    return f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"


def unasked(code: int) -> Why:
    """The reason of a worker that died without being told to."""
    if code < 0:
        return Why(ExitReason.CRASH, signal_name(-code))
    return Why(ExitReason.CRASH if code else ExitReason.EXIT, f"exit code {code}")


def exit_line(age: int, pid: int, code: int, why: Why, connections: int, requests: int) -> str:
    """The one line the arbiter logs when a worker is gone."""
    return (f"Worker {age} (pid {pid}) {exit_status(code)} after {connections} connections "
            f"and {requests} requests; reason: {why}")
