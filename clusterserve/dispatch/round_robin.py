"""``round-robin`` dispatch: the arbiter accepts and passes each connection on.

The arbiter accepts without blocking, in its one loop, until the listen
queue is empty, and sends the connections' descriptors to workers over
their channels (``SCM_RIGHTS``), all those for one worker in one message
(up to the kernel's 253 descriptors a message; ``dispatch/wire.py``).  It
gives each connection to the worker with the fewest open plus
unacknowledged connections, round-robin among equals, and skips workers
that have said they have no room, are retiring, or are late on their
heartbeat.  As in Node.js ``cluster``, the worker acknowledges each
connection (or declines it) before it reads a byte of it, all those of one
read of its channel in one report, and the arbiter keeps its copy until
then, so a connection passed to a worker that declines or dies goes to
another worker.  When no worker has room,
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
import heapq
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterserve import descriptors
from clusterserve.channel import MAY_HAND_BACK, Channel, Received
from clusterserve.dispatch import wire
from clusterserve.dispatch.wire import Connections, Handback, Peer, Report
from clusterserve.logs import Throttled, log
from clusterserve.poller import Poller
from clusterserve.sockets import ACCEPT_BACKOFF, Listener, OutOfDescriptors, accept_until_empty

ACK_WAIT = 5.0  # seconds a worker waits for room on its channel to acknowledge connections
# A worker reports closed connections with its next report; alone, once they are half of
# what the arbiter counts open there (it would send new connections elsewhere), or this
# many seconds after the first of them closed.  A message (and a wake-up of the arbiter)
# per close would cost about as much as passing the connection.
CLOSE_REPORT_DELAY = 0.05
SHED_BATCH = 32  # connections shed at once when the arbiter holds all it can
TCP_INFO_QUEUED = struct.Struct("=I")  # tcpi_unacked, 24 bytes into struct tcp_info


def _queued_on(listener: socket.socket) -> int | None:
    """How many connections wait in a TCP listener's accept queue, None where the kernel
    does not say (not Linux).  Linux gives it as ``tcpi_unacked`` of a listening socket's
    ``TCP_INFO`` (what ``ss`` shows as Recv-Q)."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_QUEUED.size + 24)
    except OSError:
        return None
    return TCP_INFO_QUEUED.unpack_from(info, 24)[0] if len(info) >= TCP_INFO_QUEUED.size + 24 else None


@dataclass(slots=True)
class Passing:
    """A connection the arbiter accepted, on its way to a worker.

    Only its descriptor: wrapping it in a ``socket.socket`` would cost a
    ``getsockname`` (CPython's check of a descriptor it is given) and an
    object per connection, for nothing the arbiter does with it.
    """

    fd: int
    family: int
    peer: Peer  # the client's TCP address from accept (None: the worker asks the kernel)

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
    """The arbiter's side: accept, queue, share out, pass, track."""

    def __init__(self, listeners: list[Listener], poller: Poller, queue_limit: int,
                 available: Callable[[int], bool]) -> None:
        """``available(pid)`` says whether a worker may be given connections now."""
        self._available = available
        self._listeners = [listener.sock for listener in listeners]
        for sock in self._listeners:
            sock.setblocking(False)
        # By listener: its family (as an int: the property makes an enum each time) and
        # whether the kernel tells the length of its accept queue.
        self._families = {sock: int(sock.family) for sock in self._listeners}
        self._measurable = {sock: self._families[sock] in wire.INET_FAMILIES and hasattr(socket, "TCP_INFO")
                            and _queued_on(sock) is not None for sock in self._listeners}
        self._poller = poller
        self._queue: deque[Passing] = deque()
        # Every connection it holds (queued, or passed and not acknowledged) is a
        # descriptor of the arbiter's own: no more than its open-file limit leaves.
        self._limit = descriptors.connection_cap(queue_limit)
        self._unacknowledged = 0  # passed and not yet acknowledged, over every seat
        self._resume_at = 0.0  # out of descriptors: the listeners are left alone until then
        self._shed_log = Throttled()
        self._lost_log = Throttled()
        self._seats: dict[int, Seat] = {}  # by worker pid, in fork order
        self._next_id = 1
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
        family = self._families[listener]
        inet = family in wire.INET_FAMILIES
        room = self._limit - self._held() if bounded else -1  # -1: no bound
        if bounded and room <= 0:
            return
        if self._measurable[listener]:
            # Accept what is queued, and not once more to find the queue empty: on Linux a
            # failing accept() makes and frees a socket and a file, as dear as a real one.
            queued = _queued_on(listener) or 0
            room = queued if room < 0 else min(room, queued)
            if room == 0:
                return
        try:
            # listener._accept: the bare descriptor that accept() wraps in a socket object, which
            # the arbiter only passes on
            for fd, peer in accept_until_empty(listener._accept):  # type: ignore[attr-defined]  # private, not in typeshed
                self._queue.append(Passing(fd, family, peer if inet else None))
                room -= 1
                if room == 0:
                    return
        except OutOfDescriptors:
            self._resume_at = time.monotonic() + ACCEPT_BACKOFF
            self._watch_listeners(False)

    def _held(self) -> int:
        return len(self._queue) + self._unacknowledged

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
            self._unacknowledged -= len(seat.sent)
            self._queue.extendleft(reversed(list(seat.sent.values())))

    def on_message(self, pid: int, message: Received) -> str | None:
        """Note any message from a worker, and act on a dispatch one; what is wrong with
        it, if anything (the worker is then not to be trusted)."""
        seat = self._seats.get(pid)
        if seat is None:
            return None
        seat.clogged = False  # it reads its channel again
        if isinstance(message, Report):
            return self._on_report(seat, message)
        if isinstance(message, Handback):
            self._on_handback(seat, message)
        return None

    def _on_report(self, seat: Seat, report: Report) -> str | None:
        sent = seat.sent
        for conn_id in report.taken:
            conn = sent.pop(conn_id, None)
            if conn is None:
                return f"it took connection {conn_id}, which was not passed to it"
            self._unacknowledged -= 1
            seat.open += 1
            os.close(conn.fd)
        declined = []
        for conn_id in report.declined:
            conn = sent.pop(conn_id, None)
            if conn is None:
                return f"it declined connection {conn_id}, which was not passed to it"
            self._unacknowledged -= 1
            declined.append(conn)
        self._queue.extendleft(reversed(declined))
        seat.open = max(0, seat.open - report.closed)
        if declined:
            seat.has_room = False  # until it says otherwise
        elif report.room is not None:
            seat.has_room = report.room
        return None

    def _on_handback(self, seat: Seat, handback: Handback) -> None:
        seat.open = max(0, seat.open - len(handback.families))
        lost = len(handback.families) - len(handback.fds)
        if lost:  # truncated: the kernel closed the excess descriptors (unix(7)), the leading ones came
            self._lost_log.warning("a worker handed back %d connections, and the arbiter could not take %d of "
                                   "them (out of descriptors?): they are closed", len(handback.families), lost)
        self._queue.extendleft(reversed([Passing(fd, family, peer) for fd, family, peer
                                         in zip(handback.fds, handback.families, handback.peers, strict=False)]))

    def dispatch(self) -> None:
        """Pass queued connections to workers with room, then accept again if there is space."""
        self._pass_queue(anyone=False)
        full = self._held() >= self._limit
        if full and self._queue and self._clients_waiting():
            self._shed()
            full = self._held() >= self._limit
        self._watch_listeners(not full and time.monotonic() >= self._resume_at)

    def _pass_queue(self, anyone: bool) -> None:
        """Share the queue out among the workers that may take connections, one message to
        each; what a full channel refuses goes back to the queue, in its place, for the others."""
        while self._queue:
            seats = [seat for pid, seat in self._seats.items()
                     if not seat.clogged and (anyone or (seat.has_room and self._available(pid)))]
            if not seats:
                return
            waiting = list(self._queue)
            self._queue.clear()
            refused: list[int] = []  # positions in ``waiting``
            for seat, positions in self._share_out(seats, len(waiting)):
                for start in range(0, len(positions), wire.MAX_FDS):
                    batch = positions[start:start + wire.MAX_FDS]
                    if not self._pass(seat, [waiting[i] for i in batch]):
                        seat.clogged = True
                        refused.extend(positions[start:])
                        break
            if not refused:
                return
            self._queue.extendleft(waiting[i] for i in sorted(refused, reverse=True))

    def _share_out(self, seats: list[Seat], count: int) -> list[tuple[Seat, list[int]]]:
        """Give each of ``count`` connections, by position, to the least loaded seat, counting
        those given before it; among equals in turn, starting one further each time."""
        self._turn += 1
        first = self._turn % len(seats)
        order = seats[first:] + seats[:first]
        loads = [(seat.load, rank) for rank, seat in enumerate(order)]
        heapq.heapify(loads)
        shares: list[list[int]] = [[] for _ in order]
        for position in range(count):
            load, rank = loads[0]
            shares[rank].append(position)
            heapq.heapreplace(loads, (load + 1, rank))
        return [(seat, share) for seat, share in zip(order, shares, strict=True) if share]

    def _pass(self, seat: Seat, conns: list[Passing]) -> bool:
        """Send connections to one worker in one message; False if its channel is full."""
        first = self._next_id
        ids = range(first, first + len(conns))
        payload = wire.pack_connections(ids, [conn.family for conn in conns], [conn.peer for conn in conns])
        if not seat.channel.send_bytes(payload, [conn.fd for conn in conns]):
            return False
        self._next_id += len(conns)
        seat.sent.update(zip(ids, conns, strict=True))
        self._unacknowledged += len(conns)
        return True


class ChannelAcceptor:
    """The worker's side: take connections from the channel, say yes or no, report closes.

    The worker tells the arbiter whether it has room (``has_room``: a free
    app thread), and the arbiter passes connections only to workers with
    room.  A connection that crosses a "no room" report on its way is still
    taken if the worker can hold it (``can_hold``: below
    ``worker_connections``, not closing): declining it would only bounce it
    between busy workers.  The connections of one read from the channel are
    acknowledged (or declined) in one report, before any of them is read,
    which also carries the closes and room so far.  A change of room goes
    out at the end of the loop turn (``flush``); closes wait for the next
    report, unless the arbiter's count of this worker's connections would
    be off by half (see ``CLOSE_REPORT_DELAY``).
    """

    def __init__(self, channel: Channel, on_connection: Callable[[socket.socket, Peer], None],
                 has_room: Callable[[], bool], can_hold: Callable[[], bool]) -> None:
        self._channel = channel
        self._on_connection = on_connection
        self._has_room = has_room
        self._can_hold = can_hold
        self._closed_since_report = 0
        self._closes_due = 0.0  # when they must go out, even alone
        self._open_as_reported = 0  # what the arbiter counts open here
        self._taken: list[int] = []  # ids taken and not yet reported (acknowledged)
        self._declined: list[int] = []  # ids declined and not yet reported
        self._said_free: bool | None = None
        self._offer_room = False  # see accept_queued
        self._told_truncated = False
        self.closed = False
        self.may_hand_back = False  # only when retiring while other workers serve on
        # Out of descriptors (a message of connections came without them all): no room
        # until then, rather than have them passed back at once.
        self._no_room_until = 0.0
        self.accepted = 0

    @property
    def resume_at(self) -> float:
        """When ``flush`` has something to report even if nothing else happens (0: never)."""
        due = [at for at in (self._no_room_until, self._closes_due) if at]
        return min(due) if due else 0.0

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

    def on_messages(self, messages: list[Received]) -> None:
        """Take what the arbiter sent, acknowledging every connection before reading it.

        The arbiter passes a connection it has no acknowledgement for to
        another worker when this one dies; had this worker read the request
        already, the next one would wait for a request that never comes.
        """
        taken: list[tuple[socket.socket, Peer]] = []
        for message in messages:
            if isinstance(message, Connections):
                self._take(message, taken)
            elif message.kind == MAY_HAND_BACK:
                self.may_hand_back = True
            else:
                for fd in message.fds:
                    os.close(fd)
        if self._taken or self._declined:
            self._report(wait=True)
        for conn, peer in taken:
            self._on_connection(conn, peer)

    def _take(self, message: Connections, taken: list[tuple[socket.socket, Peer]]) -> None:
        """Keep the connections of one message that this worker can hold; decline the rest."""
        if message.truncated:
            # The kernel could not give this worker every descriptor (it is out of them), and
            # closed the excess (unix(7)): the leading ones arrived.  The others are declined:
            # the arbiter still holds its copies, for another worker.
            arrived = len(message.fds)
            self._declined.extend(message.ids[arrived:])
            if not arrived:
                self._no_room_until = time.monotonic() + ACCEPT_BACKOFF
            if not self._told_truncated:
                self._told_truncated = True
                log.warning("worker %d got %d of %d connections passed in one message (out of descriptors?); "
                            "declined the others, for other workers (logged once)",
                            os.getpid(), arrived, len(message.ids))
        # Only as many as arrived (all, unless truncated).
        for conn_id, family, peer, fd in zip(message.ids, message.families, message.peers, message.fds, strict=False):
            # Once closing, take what the arbiter still passes (it stopped choosing
            # us; these were on their way) rather than bounce it back at a stop.
            if not self.closed and not self._can_hold():
                os.close(fd)
                self._declined.append(conn_id)
                continue
            # With the family given, the socket needs no getsockopt calls to find it out,
            # and with the peer's address, no getpeername.
            conn = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if peer is None:
                try:
                    peer = conn.getpeername()
                except OSError:
                    peer = None
            self._taken.append(conn_id)
            self.accepted += 1
            taken.append((conn, peer))

    def connection_closed(self) -> None:
        self._closed_since_report += 1
        if not self._closes_due:
            self._closes_due = time.monotonic() + CLOSE_REPORT_DELAY

    def hand_back(self, conn: socket.socket, peer: Peer) -> bool:
        """Give an untouched connection back to the arbiter for another worker.

        The arbiter counts it as closed; the caller must not report it again.  Only
        when the arbiter said so: at a full stop nobody would take it.
        """
        if not self.may_hand_back:
            return False
        if not self._channel.send_bytes(wire.pack_handback(conn.family, peer), [conn.fileno()]):
            return False
        self._open_as_reported -= 1
        return True

    def flush(self) -> None:
        """Report a change of room (with the closes so far), closes that are due, and
        acknowledgements that could not go out at once."""
        self._report(wait=False)

    def _report(self, wait: bool) -> None:
        """One report (more past ``wire.MAX_IDS`` ids) of what is new: connections taken and
        declined (the arbiter then closes or passes on its copies), how many closed, and room.
        ``wait``: for room on the channel, up to ``ACK_WAIT``."""
        now = time.monotonic()
        if self._no_room_until and now >= self._no_room_until:
            self._no_room_until = 0.0
        free = (not self.closed and not self._declined and not self._no_room_until
                and (self._offer_room or self._has_room()))
        self._offer_room = False
        room = None if free == self._said_free else free
        closes = self._closed_since_report and (now >= self._closes_due or self.closed
                                                or 2 * self._closed_since_report >= self._open_as_reported)
        while self._taken or self._declined or room is not None or closes:
            taken = self._taken[:wire.MAX_IDS]
            declined = self._declined[:wire.MAX_IDS - len(taken)]
            payload = wire.pack_report(taken, declined, self._closed_since_report, room)
            sent = self._channel.send_bytes_waiting(payload, ACK_WAIT) if wait else self._channel.send_bytes(payload)
            if not sent:
                if wait:
                    log.warning("the arbiter has not read its channel for %.0f s", ACK_WAIT)
                return
            del self._taken[:len(taken)]
            del self._declined[:len(declined)]
            self._open_as_reported += len(taken) - self._closed_since_report
            self._closed_since_report = 0
            self._closes_due = 0.0
            if room is not None:
                self._said_free = room
            room, closes = None, False
