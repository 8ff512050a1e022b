"""``round-robin`` dispatch: the arbiter accepts and passes each connection on.

The arbiter accepts without blocking, in its one loop, and sends each
connection's descriptor to a worker over the worker's channel
(``SCM_RIGHTS``).  It picks the worker with the fewest open plus
unacknowledged connections, round-robin among equals, and skips workers
that have said they have no room, are retiring, or are late on their
heartbeat.  As in Node.js ``cluster``, the worker acknowledges each
connection (or declines it), before it reads a byte of it, and the arbiter
keeps its copy until then, so a connection passed to a worker that
declines or dies goes to another worker.  When no worker has room,
connections wait in a bounded queue.  What the arbiter holds, queued or
not yet acknowledged, is bounded by ``backlog`` and by its open-file limit
(``descriptors.connection_cap``); at that bound it closes queued
connections that have sent nothing, oldest first, and else stops
accepting, and the kernel's backlog holds the rest.  Out of descriptors
all the same, it leaves the listeners alone for ``ACCEPT_BACKOFF``.

``ChannelAcceptor`` is the worker's side.
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterserve import descriptors
from clusterserve.channel import (
    CONNECTION,
    DECLINE,
    HANDBACK,
    MAY_HAND_BACK,
    REPORT,
    Channel,
    Message,
)
from clusterserve.logs import Throttled, log
from clusterserve.poller import Poller
from clusterserve.sockets import ACCEPT_BACKOFF, Listener, OutOfDescriptors, accept_until_empty

ACK_WAIT = 5.0  # seconds a worker waits for room on its channel to acknowledge connections
SHED_BATCH = 32  # connections shed at once when the arbiter holds all it can


def _peer_to_pass(family: int, peer: Any) -> Any:
    """The client's address as a channel message can carry it (JSON): a TCP one, else None
    (the receiving worker then asks the kernel)."""
    return peer if family in (socket.AF_INET, socket.AF_INET6) else None


@dataclass(slots=True)
class Passing:
    """A connection the arbiter accepted, on its way to a worker.

    Only its descriptor: wrapping it in a ``socket.socket`` would cost a
    ``getsockname`` (CPython's check of a descriptor it is given) and an
    object per connection, for nothing the arbiter does with it.
    """

    fd: int
    family: int
    peer: Any  # the client's address from accept (None: the worker asks the kernel)

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Seat:
    """The arbiter's view of one worker's load."""

    channel: Channel
    open: int = 0
    has_room: bool = True
    # Its channel was full at the last pass (it is not reading now); cleared by its next
    # message.  Not "no room": the worker says that itself, and only when it changes.
    clogged: bool = False
    sent: dict[int, Passing] = field(default_factory=dict)  # unacknowledged, by id

    @property
    def load(self) -> int:
        return self.open + len(self.sent)


class RoundRobinDispatcher:
    """The arbiter's side: accept, queue, pick a worker, pass, track."""

    def __init__(self, listeners: list[Listener], poller: Poller, queue_limit: int,
                 available: Callable[[int], bool]) -> None:
        """``available(pid)`` says whether a worker may be given connections now."""
        self._available = available
        self._listeners = [listener.sock for listener in listeners]
        for sock in self._listeners:
            sock.setblocking(False)
        self._poller = poller
        self._queue: deque[Passing] = deque()
        # Every connection it holds (queued, or passed and not acknowledged) is a
        # descriptor of the arbiter's own: no more than its open-file limit leaves.
        self._limit = descriptors.connection_cap(queue_limit)
        self._resume_at = 0.0  # out of descriptors: the listeners are left alone until then
        self._shed_log = Throttled()
        self._seats: dict[int, Seat] = {}  # by worker pid, in fork order
        self._ids = itertools.count(1)
        self._turn = 0
        self._accepting = False
        self._stopped = False

    @property
    def queued(self) -> int:
        """Connections accepted and waiting for a worker."""
        return len(self._queue)

    def start(self) -> None:
        self._watch_listeners(True)

    def stop(self, graceful: bool) -> None:
        """The server is stopping: stop accepting for good.

        A graceful stop first takes what waits in the listen queue and hands
        every waiting connection to a worker, room or not, to be answered with
        ``Connection: close``; a fast stop drops them.
        """
        if self._stopped:
            return
        self._watch_listeners(False)
        self._stopped = True
        if graceful:
            for sock in self._listeners:
                self._accept(sock, bounded=False)
            self.pass_all()
        while self._queue:
            self._queue.popleft().close()

    def pass_all(self) -> None:
        """While stopping: hand every waiting connection (a handed-back one, say) to any
        worker still alive, retiring or not; a closing worker takes what it is given."""
        self._pass_queue(anyone=True)

    def _watch_listeners(self, on: bool) -> None:
        if on == self._accepting or (on and self._stopped):
            return
        for sock in self._listeners:
            if on:
                self._poller.add(sock.fileno(), functools.partial(self._accept_all, sock), routine=True)
            else:
                self._poller.remove(sock.fileno())
        self._accepting = on

    def _accept_all(self, listener: socket.socket) -> None:
        self._accept(listener, bounded=True)
        self.dispatch()

    def _accept(self, listener: socket.socket, bounded: bool) -> None:
        """Accept until the listen queue is empty or, if ``bounded``, the arbiter holds
        all it can."""
        family = listener.family
        if bounded and self._full():
            return
        try:
            # listener._accept: the bare descriptor that accept() wraps in a socket object, which
            # the arbiter only passes on
            for fd, peer in accept_until_empty(listener._accept):  # type: ignore[attr-defined]  # private, not in typeshed
                self._queue.append(Passing(fd, family, _peer_to_pass(family, peer)))
                if bounded and self._full():
                    return
        except OutOfDescriptors:
            self._resume_at = time.monotonic() + ACCEPT_BACKOFF
            self._watch_listeners(False)

    def _full(self) -> bool:
        return len(self._queue) + sum(len(seat.sent) for seat in self._seats.values()) >= self._limit

    def _clients_waiting(self) -> bool:
        """Connections wait in a listening socket's queue."""
        listeners = select.poll()
        for sock in self._listeners:
            listeners.register(sock.fileno(), select.POLLIN)
        return bool(listeners.poll(0))

    def _shed(self) -> None:
        """Holding all it can, with no worker to take any, and more clients waiting: close
        the queued connections that have sent nothing, oldest first, so that one with a
        request gets in.  (The kernel's listen queue would hold it behind them for as
        long as they stay.)"""
        waiting = select.poll()
        for conn in self._queue:
            waiting.register(conn.fd, select.POLLIN)
        spoken = {fd for fd, _ in waiting.poll(0)}
        shed = [conn for conn in self._queue if conn.fd not in spoken][:SHED_BATCH]
        for conn in shed:
            self._queue.remove(conn)
            conn.close()
        if shed:
            self._shed_log.warning("holding %d connections, as many as the open-file limit allows, "
                                   "and no worker has room: closed %d that had sent nothing",
                                   self._limit, len(shed))

    # -- workers -------------------------------------------------------------

    def add_worker(self, pid: int, channel: Channel) -> None:
        self._seats[pid] = Seat(channel)

    def remove_worker(self, pid: int) -> None:
        """A worker is gone: what it had not acknowledged goes back to the queue."""
        seat = self._seats.pop(pid, None)
        if seat is not None:
            self._queue.extendleft(reversed(list(seat.sent.values())))

    def on_message(self, pid: int, message: Message) -> bool:
        """Handle a dispatch message from a worker; False if it is not one."""
        seat = self._seats.get(pid)
        if seat is None:
            return False
        seat.clogged = False  # it reads its channel again
        if message.kind == REPORT:
            fields = message.fields
            for conn_id in fields.get("taken", ()):
                conn = seat.sent.pop(conn_id, None)
                if conn is not None:
                    conn.close()
                    seat.open += 1
            seat.open = max(0, seat.open - int(fields.get("closed", 0)))
            if "free" in fields:
                seat.has_room = bool(fields["free"])
        elif message.kind == DECLINE:
            conn = seat.sent.pop(int(message.fields["id"]), None)
            if conn is not None:
                self._queue.appendleft(conn)
            seat.has_room = False
        elif message.kind == HANDBACK:
            seat.open = max(0, seat.open - len(message.fds))
            family, peer = int(message.fields["family"]), message.fields.get("peer")
            self._queue.extendleft(Passing(fd, family, peer) for fd in message.fds)
        else:
            return False
        return True

    def dispatch(self) -> None:
        """Pass queued connections to workers with room, then accept again if there is space."""
        self._pass_queue(anyone=False)
        if self._full() and self._queue and self._clients_waiting():
            self._shed()
        self._watch_listeners(not self._full() and time.monotonic() >= self._resume_at)

    def _pass_queue(self, anyone: bool) -> None:
        while self._queue:
            seat_pid = self._pick(anyone)
            if seat_pid is None:
                break
            seat = self._seats[seat_pid]
            conn = self._queue.popleft()
            conn_id = next(self._ids)
            if seat.channel.send(CONNECTION, fds=[conn.fd], id=conn_id, family=conn.family, peer=conn.peer):
                seat.sent[conn_id] = conn
            else:
                self._queue.appendleft(conn)
                seat.clogged = True

    def _pick(self, anyone: bool) -> int | None:
        candidates = [pid for pid, seat in self._seats.items()
                      if not seat.clogged and (anyone or (seat.has_room and self._available(pid)))]
        if not candidates:
            return None
        lightest = min(self._seats[pid].load for pid in candidates)
        tied = [pid for pid in candidates if self._seats[pid].load == lightest]
        self._turn += 1
        return tied[self._turn % len(tied)]


class ChannelAcceptor:
    """The worker's side: take connections from the channel, say yes or no, report closes.

    The worker tells the arbiter whether it has room (``has_room``: a free
    app thread), and the arbiter passes connections only to workers with
    room.  A connection that crosses a "no room" report on its way is still
    taken if the worker can hold it (``can_hold``: below
    ``worker_connections``, not closing): declining it would only bounce it
    between busy workers.  The connections of one read from the channel are
    acknowledged in one message, before any of them is read; close counts
    and room changes go out once per loop turn (``flush``).
    """

    def __init__(self, channel: Channel, on_connection: Callable[[socket.socket, Any], None],
                 has_room: Callable[[], bool], can_hold: Callable[[], bool]) -> None:
        self._channel = channel
        self._on_connection = on_connection
        self._has_room = has_room
        self._can_hold = can_hold
        self._closed_since_report = 0
        self._acked: list[int] = []
        self._said_free: bool | None = None
        self._offer_room = False  # see accept_queued
        self.closed = False
        self.may_hand_back = False  # only when retiring while other workers serve on
        self.resume_at = 0.0  # never backs off: the arbiter accepts
        self.accepted = 0

    def resume(self) -> None:
        """Room is reported from ``has_room`` at each flush."""

    def pause(self) -> None:
        """Room is reported from ``has_room`` at each flush."""

    def close(self, leave_queued: bool = False) -> None:
        """Stop taking connections (``leave_queued`` is for the accepting modes: here the
        arbiter holds the queue)."""
        self.closed = True
        self.flush()

    def accept_queued(self) -> None:
        """Report room at the next flush even if the freed thread is busy again by then,
        so that the arbiter passes what it queued meanwhile; such a connection is held
        (``can_hold``) and waits in line with the requests of this worker's connections."""
        self._offer_room = True

    def sweep(self) -> None:
        """Nothing to sweep: the arbiter accepts."""

    def on_messages(self, messages: list[Message]) -> None:
        """Take what the arbiter sent, acknowledging every connection before reading it.

        The arbiter passes a connection it has no acknowledgement for to
        another worker when this one dies; had this worker read the request
        already, the next one would wait for a request that never comes.
        """
        taken = [pair for message in messages if (pair := self._take(message)) is not None]
        if not taken:
            return
        if self._channel.send_waiting(REPORT, ACK_WAIT, taken=self._acked):
            self._acked = []
        else:
            log.warning("the arbiter has not read its channel for %.0f s", ACK_WAIT)
        for conn, peer in taken:
            self._on_connection(conn, peer)

    def _take(self, message: Message) -> tuple[socket.socket, Any] | None:
        """The connection a message passes, if this worker keeps it."""
        if message.kind == MAY_HAND_BACK:
            self.may_hand_back = True
            return None
        if message.kind != CONNECTION:
            for fd in message.fds:
                socket.close(fd)
            return None
        conn_id = message.fields["id"]
        for fd in message.fds[1:]:
            socket.close(fd)
        if not message.fds:
            # The kernel could not give us the descriptor (this worker is out of them): the
            # arbiter still holds its copy, for another worker.
            self._channel.send(DECLINE, id=conn_id)
            self._said_free = False
            return None
        # Once closing, take what the arbiter still passes (it stopped choosing
        # us; these were on their way) rather than bounce it back at a stop.
        if not self.closed and not self._can_hold():
            socket.close(message.fds[0])
            self._channel.send(DECLINE, id=conn_id)
            self._said_free = False  # the arbiter reads a decline as "no room" until told otherwise
            return None
        # With the family given, the socket needs no getsockopt calls to find it out,
        # and with the peer's address, no getpeername.
        conn = socket.socket(int(message.fields["family"]), socket.SOCK_STREAM, 0, message.fds[0])
        peer = message.fields.get("peer")
        if peer is not None:
            peer = tuple(peer)  # JSON made the address tuple a list
        else:
            try:
                peer = conn.getpeername()
            except OSError:
                peer = None
        self._acked.append(conn_id)
        self.accepted += 1
        return conn, peer

    def connection_closed(self) -> None:
        self._closed_since_report += 1

    def hand_back(self, conn: socket.socket, peer: Any) -> bool:
        """Give an untouched connection back to the arbiter for another worker.

        The arbiter counts it as closed; the caller must not report it again.  Only
        when the arbiter said so: at a full stop nobody would take it.
        """
        if not self.may_hand_back:
            return False
        return self._channel.send(HANDBACK, fds=[conn.fileno()], family=conn.family,
                                  peer=_peer_to_pass(conn.family, peer))

    def flush(self) -> None:
        """Report what changed since the last loop turn, in one message: the connections
        taken (the arbiter then closes its copies), how many closed, and room."""
        report: dict[str, Any] = {}
        if self._acked:
            report["taken"] = self._acked
        if self._closed_since_report:
            report["closed"] = self._closed_since_report
        free = not self.closed and (self._offer_room or self._has_room())
        self._offer_room = False
        if free != self._said_free:
            report["free"] = free
        if report and self._channel.send(REPORT, **report):
            self._acked = []
            self._closed_since_report = 0
            self._said_free = free
