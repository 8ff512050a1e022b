"""Short request/reply exchanges served from the arbiter's loop.

The control socket and the metrics endpoint each take a connection, read
one small request, write one reply and close.  The arbiter has one thread
and must never block, so every step here is non-blocking and driven by the
poller: a client that connects and sends nothing, or stops reading, is
dropped at its deadline and never holds the arbiter up.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from clusterserve.logs import log
from clusterserve.poller import Poller
from clusterserve.sockets import ACCEPT_BACKOFF, OutOfDescriptors, accept_until_empty

# ``reply(request so far)`` returns the whole reply once the request is complete, else None.
Replier = Callable[[bytes], "bytes | None"]

MAX_REQUEST = 16 * 1024
TIMEOUT = 5.0
MAX_CLIENTS = 32


@dataclass(eq=False)
class _Exchange:
    sock: socket.socket
    deadline: float
    received: bytes = b""
    reply: memoryview | None = None


class ExchangeServer:
    """Serves ``reply`` on a listening socket, one exchange per connection."""

    def __init__(self, listener: socket.socket, poller: Poller, reply: Replier,
                 too_large: bytes = b"") -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.poller = poller
        self.reply = reply
        self.too_large = too_large  # sent when a request outgrows MAX_REQUEST
        self.open: set[_Exchange] = set()
        self.resume_at = 0.0  # out of descriptors: the listener is left alone until then
        poller.add(listener.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            for sock, _ in accept_until_empty(self.listener.accept):
                if len(self.open) >= MAX_CLIENTS:
                    sock.close()
                    continue
                sock.setblocking(False)
                exchange = _Exchange(sock, time.monotonic() + TIMEOUT)
                self.open.add(exchange)
                self.poller.add(sock.fileno(), functools.partial(self._on_readable, exchange))
        except OutOfDescriptors:
            self.poller.remove(self.listener.fileno())
            self.resume_at = time.monotonic() + ACCEPT_BACKOFF

    def _on_readable(self, exchange: _Exchange) -> None:
        try:
            data = exchange.sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish(exchange)
            return
        exchange.received += data
        if len(exchange.received) > MAX_REQUEST:
            answer: bytes | None = self.too_large
        else:
            try:
                answer = self.reply(exchange.received)
            except Exception:  # noqa: BLE001 - a bug here must not stop the server
                log.exception("error answering a request on %s", self.listener.getsockname())
                self._finish(exchange)
                return
        if answer is None:
            return
        self.poller.remove(exchange.sock.fileno())
        exchange.reply = memoryview(answer)
        self.poller.add(exchange.sock.fileno(), lambda: self._on_writable(exchange), writable=True)
        self._on_writable(exchange)

    def _on_writable(self, exchange: _Exchange) -> None:
        assert exchange.reply is not None
        try:
            sent = exchange.sock.send(exchange.reply)
        except BlockingIOError:
            return
        except OSError:
            self._finish(exchange)
            return
        exchange.reply = exchange.reply[sent:]
        if not exchange.reply:
            self._finish(exchange)

    def expire(self, now: float) -> None:
        """Drop clients past their deadline, and end a back-off (called from the arbiter's tick)."""
        for exchange in [e for e in self.open if e.deadline <= now]:
            self._finish(exchange)
        if self.resume_at and now >= self.resume_at:
            self.resume_at = 0.0
            self.poller.add(self.listener.fileno(), self._accept)

    def _finish(self, exchange: _Exchange) -> None:
        self.open.discard(exchange)
        if exchange.sock.fileno() in self.poller:
            self.poller.remove(exchange.sock.fileno())
        exchange.sock.close()

    def close(self) -> None:
        for exchange in list(self.open):
            self._finish(exchange)
        if self.listener.fileno() in self.poller:
            self.poller.remove(self.listener.fileno())
        self.listener.close()
