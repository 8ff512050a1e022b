"""``shared`` dispatch: every worker accepts on the sockets it inherited.

Listeners are watched with ``EPOLLEXCLUSIVE`` so one connection wakes one
worker.  A woken worker accepts until the queue is empty (a worker that is
woken and does not accept would strand the connection), and stops watching
the listeners while it has no room, leaving new connections to the others.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from clusterserve.channel import MAY_HAND_BACK, Received
from clusterserve.poller import Poller
from clusterserve.sockets import ACCEPT_BACKOFF, Listener, OutOfDescriptors, accept_until_empty

OnConnection = Callable[[socket.socket, object], None]


class SharedAcceptor:
    def __init__(
        self,
        listeners: list[Listener],
        poller: Poller,
        on_connection: OnConnection,
        has_room: Callable[[], bool],
        accept_batch: int = 0,
    ) -> None:
        """``accept_batch``: the most connections one wake-up takes (0: until the queue
        is empty or the worker has no room).  A worker that serves each request as it
        accepts it takes one: the rest stay queued for whichever worker polls next,
        rather than waiting behind its requests."""
        self._accept_batch = accept_batch
        self._sockets = [listener.sock for listener in listeners]
        for sock in self._sockets:
            sock.setblocking(False)
        self._poller = poller
        self._on_connection = on_connection
        self._has_room = has_room
        self.accepting = False
        self.closed = False
        self.others_serve_on = False  # the arbiter stops only this worker
        self.resume_at = 0.0  # out of descriptors: the listeners are left alone until then
        self.accepted = 0

    def _watch(self, sock: socket.socket) -> None:
        self._poller.add(sock.fileno(), lambda: self._accept_all(sock), exclusive=True)

    def resume(self) -> None:
        """Watch the listeners again (epoll reports at once what queued meanwhile)."""
        if self.accepting or self.closed or time.monotonic() < self.resume_at:
            return
        for sock in self._sockets:
            self._watch(sock)
        self.accepting = True

    def pause(self) -> None:
        if not self.accepting:
            return
        for sock in self._sockets:
            self._poller.remove(sock.fileno())
        self.accepting = False

    def close(self, leave_queued: bool = False) -> None:
        """Stop accepting for good: take what is queued already, then drop this
        worker's copies of the listeners.

        Taking the queue (to answer with ``Connection: close``) matters when the
        whole server stops: connections left in a listen queue are reset when
        the last copy of the socket closes.  All of it is accepted before any
        is served: served one by one as accepted, a queue that clients keep
        filling would hold a retiring worker for as long as they do.

        ``leave_queued``: this worker stopped watching the listeners long ago (it
        reached ``max_requests``), so the queue is the other workers' while they
        serve on; taken here, it would be served past the limit.
        """
        self.pause()
        self.closed = True
        queued: list[tuple[socket.socket, object]] = []
        if not (leave_queued and self.others_serve_on):
            try:
                for sock in self._sockets:
                    queued.extend(accept_until_empty(sock.accept))
            except OutOfDescriptors:
                pass  # what is left stays queued, for the other workers
        self.remove_sockets(list(self._sockets))
        for conn, peer in queued:
            self._take(conn, peer)

    def add_sockets(self, sockets: list[socket.socket]) -> None:
        """Accept on more listening sockets (lent ones, in reuseport mode)."""
        if self.closed:
            for sock in sockets:
                sock.close()
            return
        for sock in sockets:
            sock.setblocking(False)
            self._sockets.append(sock)
            if self.accepting:
                self._watch(sock)

    def remove_sockets(self, sockets: list[socket.socket]) -> None:
        """Stop accepting on these sockets and close this worker's copies."""
        for sock in sockets:
            if sock in self._sockets:
                self._sockets.remove(sock)
                if self.accepting:
                    self._poller.remove(sock.fileno())
            sock.close()

    def accept_queued(self) -> None:
        """Accept what waits on the listeners now, as room allows (the worker calls it
        when a thread frees up, before the next poll).  While the listeners are watched
        the next poll reports them anyway, so only a paused acceptor looks."""
        if not self.closed and not self.accepting and time.monotonic() >= self.resume_at:
            for sock in list(self._sockets):
                self._accept_all(sock)

    def sweep(self) -> None:
        """Accept what waits on the listeners now, even while they are watched (the worker
        calls it with each heartbeat).  ``EPOLLEXCLUSIVE`` gives a connection's wake-up to
        one worker; if that one cannot take it (out of descriptors, or pausing just then),
        the connection would wait until the next one wakes somebody."""
        if not self.closed and time.monotonic() >= self.resume_at:
            for sock in list(self._sockets):
                self._accept_all(sock)

    # Dispatch-mode hooks the worker calls; the shared socket needs none of them.

    def on_messages(self, messages: list[Received]) -> None:
        for message in messages:
            self.others_serve_on |= message.kind == MAY_HAND_BACK
            for fd in message.fds:
                socket.close(fd)

    def connection_closed(self) -> None:
        pass

    def hand_back(self, conn: socket.socket, peer: object) -> bool:
        return False

    def flush(self) -> None:
        """Once a back-off is over, watch the listeners again (if there is room)."""
        if self.resume_at and time.monotonic() >= self.resume_at:
            self.resume_at = 0.0
            if self._has_room():
                self.resume()

    def _accept_all(self, listener: socket.socket) -> None:
        """Accept while there is room, up to ``accept_batch`` connections."""
        if not self._has_room():
            return
        try:
            for taken, (conn, peer) in enumerate(accept_until_empty(listener.accept), 1):
                self._take(conn, peer)
                if taken == self._accept_batch or not self._has_room():
                    return
        except OutOfDescriptors:
            # The connection stays queued and the listener readable: watching it now
            # would only spin.  Other workers may have descriptors to spare.
            self.pause()
            self.resume_at = time.monotonic() + ACCEPT_BACKOFF

    def _take(self, conn: socket.socket, peer: object) -> None:
        self.accepted += 1
        self._on_connection(conn, peer)
