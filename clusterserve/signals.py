"""Signals as events: handlers only wake the loop, the loop does the work.

``signal.set_wakeup_fd`` writes each signal's number to a socket that the
process's poller watches, so no logic runs inside a signal handler and a
signal can never interrupt the arbiter halfway through a transition.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterable

from clusterserve.poller import Poller


def _wake_only(signum: int, frame: object) -> None:
    """Python-level handler; the wakeup fd carries the signal to the loop."""


class SignalQueue:
    def __init__(self, poller: Poller, signals: Iterable[int], on_signal: Callable[[int], None]) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._on_signal = on_signal
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, _wake_only)
        poller.add(self._reader.fileno(), self._deliver)

    def _deliver(self) -> None:
        try:
            data = self._reader.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            self._on_signal(signum)

    def close(self) -> None:
        """Stop routing signals here; the poller is its owner's to close."""
        signal.set_wakeup_fd(-1)
        self._reader.close()
        self._writer.close()
