"""Signals as events: handlers only wake the loop, the loop does the work.

``signal.set_wakeup_fd`` writes each signal's number to a socket that the
process's poller watches, so no logic runs inside a signal handler and a
signal can never interrupt the arbiter halfway through a transition.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterable

from clusterserve.poller import Poller

# Every signal the arbiter acts on.
ARBITER_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD, signal.SIGHUP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
)


def fork_with_signals_held() -> int:
    """``os.fork()`` with the arbiter's signals blocked until the child is ready for them.

    A child starts with the arbiter's handlers, which write to the arbiter's
    wakeup socket: a SIGTERM sent to a newborn worker would otherwise reach
    the arbiter as if it were meant for it.  The child calls ``release()``
    once it has handlers of its own; the parent's are released at once.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, ARBITER_SIGNALS)
    pid = os.fork()
    if pid != 0:
        release()
    return pid


def keep_off_this_thread() -> None:
    """Block the signals a process acts on in the calling thread, so that the kernel
    delivers them to the main thread.  Python runs handlers only in the main thread,
    and a main thread blocked in an app's request (a sleep, a read) wakes only for a
    signal delivered to it: one delivered to a helper thread would wait for the
    request to end."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {*ARBITER_SIGNALS, signal.SIGABRT})


def release() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ARBITER_SIGNALS)


def reset_to_defaults() -> None:
    """In a child of the arbiter: forget its wakeup socket and handlers."""
    signal.set_wakeup_fd(-1)
    for sig in ARBITER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _wake_only(signum: int, frame: object) -> None:
    """Python-level handler; the wakeup fd carries the signal to the loop."""


class SignalQueue:
    def __init__(self, poller: Poller, signals: Iterable[int], on_signal: Callable[[int], None],
                 at_once: Callable[[int], None] | None = None) -> None:
        """``on_signal`` runs from the loop; ``at_once``, if given, also runs the moment
        the signal arrives (in the main thread, between two bytecodes of whatever runs)."""
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._on_signal = on_signal
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        handler = _wake_only if at_once is None else (lambda signum, frame: at_once(signum))
        for sig in signals:
            signal.signal(sig, handler)
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
