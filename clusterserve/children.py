"""The arbiter's children, through the operating system: fork, signal, reap, measure.

The arbiter asks for these through ``ProcessTable`` so that its decisions can be
driven in unit tests by a fake table and a fake clock, without forking.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol

from clusterserve import process, signals, upgrade
from clusterserve.sockets import Listener


class ProcessTable(Protocol):
    def fork(self) -> int:
        """A new child: its pid here, 0 in the child."""

    def kill(self, pid: int, sig: int) -> None:
        """Send ``sig``; ProcessLookupError if the child is gone."""

    def reap(self) -> tuple[int, int] | None:
        """A child that exited (pid, exit code, negative for a signal), or None."""

    def resident_bytes(self, pid: int) -> int | None:
        """Its resident set size, or None if it is gone."""

    def start_successor(self, listeners: Sequence[tuple[Listener, str]], argv: Sequence[str],
                        directory: str, before_exec: Callable[[], None]) -> upgrade.Successor:
        """USR2: a new arbiter on the same sockets."""


class OsProcessTable:
    def fork(self) -> int:
        return signals.fork_with_signals_held()

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def reap(self) -> tuple[int, int] | None:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        return None if pid == 0 else (pid, os.waitstatus_to_exitcode(status))

    def resident_bytes(self, pid: int) -> int | None:
        return process.resident_bytes(pid)

    def start_successor(self, listeners: Sequence[tuple[Listener, str]], argv: Sequence[str],
                        directory: str, before_exec: Callable[[], None]) -> upgrade.Successor:
        return upgrade.start_successor(listeners, argv, directory, before_exec)
