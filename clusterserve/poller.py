"""A small readiness loop over ``select.epoll``.

``selectors`` and asyncio cannot pass ``EPOLLEXCLUSIVE``, which the shared
dispatch mode needs so that one connection wakes one worker; this poller can.
Where epoll is missing it falls back to ``selectors`` without exclusivity.
"""

from __future__ import annotations

import select
import selectors
from collections.abc import Callable
from typing import Any

Callback = Callable[[], None]

EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
# What the backend is, tested on every poll: select.epoll where there is one.  (Not
# selectors.BaseSelector: an isinstance against an ABC runs Python code each time.)
EPOLL: tuple[type[select.epoll], ...] = (select.epoll,) if hasattr(select, "epoll") else ()


class Poller:
    def __init__(self, contain: Callable[[Callback], None] | None = None) -> None:
        """``contain(callback)``, if given, runs each callback (to contain its exceptions)."""
        self._contain = contain
        self._callbacks: dict[int, Callback] = {}
        self._routine: set[int] = set()
        self._backend: select.epoll | selectors.BaseSelector = \
            select.epoll() if hasattr(select, "epoll") else selectors.DefaultSelector()

    def add(self, fd: int, callback: Callback, *, exclusive: bool = False,
            writable: bool = False, routine: bool = False) -> None:
        """Call ``callback`` whenever ``fd`` is readable (or closed by the peer); with
        ``writable``, whenever it can take more output instead.  A ``routine`` descriptor
        carries steady traffic that ``poll`` does not count as news."""
        self._callbacks[fd] = callback
        if routine:
            self._routine.add(fd)
        if isinstance(self._backend, EPOLL):
            events = select.EPOLLOUT if writable else select.EPOLLIN
            self._backend.register(fd, events | (EXCLUSIVE if exclusive else 0))
        else:
            self._backend.register(fd, selectors.EVENT_WRITE if writable else selectors.EVENT_READ)

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is None:
            return
        self._routine.discard(fd)
        self._backend.unregister(fd)

    def __contains__(self, fd: int) -> bool:
        return fd in self._callbacks

    def poll(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds and run the callbacks of ready descriptors.

        True if there is news: the wait timed out, or a descriptor that is
        not ``routine`` was ready.
        """
        try:
            if isinstance(self._backend, EPOLL):
                ready = [fd for fd, _ in self._backend.poll(-1 if timeout is None else timeout)]
            else:
                ready = [key.fd for key, _ in self._backend.select(timeout)]
        except InterruptedError:
            return True
        news = not ready
        for fd in ready:
            news = news or fd not in self._routine
            callback = self._callbacks.get(fd)
            if callback is None:
                continue
            if self._contain is None:
                callback()
            else:
                self._contain(callback)
        return news

    def close(self) -> None:
        self._callbacks.clear()
        self._backend.close()


class AsyncioPoller:
    """The ``Poller`` interface on an asyncio (or uvloop) event loop.

    Plain descriptors go to ``loop.add_reader``.  Exclusive ones are
    registered on an inner epoll with ``EPOLLEXCLUSIVE``, and the loop
    watches the inner epoll's own descriptor, so that one connection still
    wakes one worker although asyncio cannot pass the flag itself.
    """

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._inner = select.epoll()
        self._exclusive: dict[int, Callback] = {}
        loop.add_reader(self._inner.fileno(), self._run_exclusive)

    def add(self, fd: int, callback: Callback, *, exclusive: bool = False) -> None:
        if exclusive and EXCLUSIVE:
            self._exclusive[fd] = callback
            self._inner.register(fd, select.EPOLLIN | EXCLUSIVE)
        else:
            self._loop.add_reader(fd, callback)

    def remove(self, fd: int) -> None:
        if self._exclusive.pop(fd, None) is not None:
            self._inner.unregister(fd)
        else:
            self._loop.remove_reader(fd)

    def _run_exclusive(self) -> None:
        for fd, _ in self._inner.poll(0):
            callback = self._exclusive.get(fd)
            if callback is not None:
                callback()

    def close(self) -> None:
        self._loop.remove_reader(self._inner.fileno())
        self._inner.close()
