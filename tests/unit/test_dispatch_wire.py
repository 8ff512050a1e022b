"""Round-robin's binary messages over real socketpairs and real TCP connections: many
descriptors in one message, more than the kernel takes in one, messages the kernel had to
truncate (MSG_CTRUNC), and garbage."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from clusterserve.channel import MALFORMED, Channel, Message, Received
from clusterserve.dispatch import wire
from clusterserve.dispatch.round_robin import ChannelAcceptor, RoundRobinDispatcher
from clusterserve.dispatch.wire import Connections, Handback, Report
from clusterserve.poller import Poller
from clusterserve.sockets import Listener, TcpAddress
from clusterserve.worker_messages import problem

pytestmark = pytest.mark.timeout(30)

WORKER = 1  # the pid the dispatcher knows the worker end by
Kind = TypeVar("Kind")


def receive(channel: Channel) -> list[Received]:
    messages = channel.receive()
    assert messages is not None, "end of file"
    return messages


def only(kind: type[Kind], messages: list[Received]) -> list[Kind]:
    assert all(isinstance(m, kind) for m in messages), messages
    return [m for m in messages if isinstance(m, kind)]


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """Room for a few hundred connections, each held by a client, the arbiter and a worker."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Setup:
    """A dispatcher on a real listener, and one worker's channel."""

    def __init__(self) -> None:
        self.listening = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.poller = Poller()
        self.dispatcher = RoundRobinDispatcher([Listener(self.listening, TcpAddress("127.0.0.1", 0))],
                                               self.poller, queue_limit=2048, available=lambda pid: True)
        self.arbiter_end, self.worker_end = Channel.pair()
        self.dispatcher.add_worker(WORKER, self.arbiter_end)
        self.dispatcher.start()
        self.clients: list[socket.socket] = []

    def connect(self, count: int) -> None:
        """``count`` clients, accepted and passed on by the dispatcher."""
        self.clients += [socket.create_connection(self.listening.getsockname()) for _ in range(count)]
        self.poller.poll(1.0)

    def arbiter_reads(self) -> list[Any]:
        """What the worker sent, handed to the dispatcher as the arbiter does; its verdicts."""
        return [self.dispatcher.on_message(WORKER, message) for message in receive(self.arbiter_end)]

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        self.dispatcher.stop(graceful=False)
        self.arbiter_end.close()
        self.worker_end.close()
        self.poller.close()
        self.listening.close()


@pytest.fixture
def setup() -> Iterator[Setup]:
    made = Setup()
    yield made
    made.close()


def taking_acceptor(channel: Channel, taken: list[tuple[socket.socket, Any]]) -> ChannelAcceptor:
    return ChannelAcceptor(channel, lambda conn, peer: taken.append((conn, peer)), has_room=lambda: True,
                           can_hold=lambda: True)


def answer_each(taken: list[tuple[socket.socket, Any]]) -> None:
    for conn, _ in taken:
        conn.sendall(b"yours\n")
        conn.close()


def test_connections_that_queue_go_to_a_worker_in_one_message(setup: Setup) -> None:
    setup.connect(100)
    messages = receive(setup.worker_end)
    assert [len(m.fds) for m in only(Connections, messages)] == [100]
    assert only(Connections, messages)[0].peers == [client.getsockname() for client in setup.clients]

    taken: list[tuple[socket.socket, Any]] = []
    acceptor = taking_acceptor(setup.worker_end, taken)
    acceptor.on_messages(messages)
    assert setup.arbiter_reads() == [None]  # one report acknowledges all of them
    assert len(setup.dispatcher._seats[WORKER].sent) == 0
    assert setup.dispatcher._seats[WORKER].open == 100
    assert setup.dispatcher._unacknowledged == 0
    answer_each(taken)
    assert all(client.recv(10) == b"yours\n" for client in setup.clients)


def test_more_than_the_kernel_takes_in_one_message_goes_in_several(setup: Setup) -> None:
    """SCM_MAX_FD: a sendmsg with more than 253 descriptors fails with EINVAL."""
    setup.connect(300)
    messages = receive(setup.worker_end)
    assert [len(m.fds) for m in only(Connections, messages)] == [wire.MAX_FDS, 300 - wire.MAX_FDS]

    taken: list[tuple[socket.socket, Any]] = []
    taking_acceptor(setup.worker_end, taken).on_messages(messages)
    assert setup.arbiter_reads() == [None]
    assert setup.dispatcher._unacknowledged == 0 and setup.dispatcher.queued == 0
    assert [peer for _, peer in taken] == [client.getsockname() for client in setup.clients]
    answer_each(taken)
    assert all(client.recv(10) == b"yours\n" for client in setup.clients)


def in_child_with_free_slots(slots: int, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child that can open only ``slots`` more descriptors (its
    RLIMIT_NOFILE at the number of its next free descriptor after those); return its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            free = [fd for fd in range(8192) if not _is_open(fd)][:slots + 1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (free[slots], resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            result = body()
        except BaseException as err:  # noqa: BLE001 - reported to the parent, which fails the test
            result = {"error": repr(err)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    result = json.loads(text)
    assert "error" not in result, result["error"]
    return dict(result)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_what_a_truncated_message_lacks_is_declined_and_nothing_is_lost(setup: Setup) -> None:
    """A worker out of descriptors gets the leading descriptors of a message and MSG_CTRUNC:
    it serves those, declines the rest, and says so once; the arbiter, which kept its
    copies, passes those on."""
    setup.connect(5)
    setup.connect(5)  # two messages
    own_fds_before = set(os.listdir("/proc/self/fd"))

    def worker_short_of_descriptors() -> dict[str, Any]:
        handler = CountingHandler()
        logging.getLogger("clusterserve").addHandler(handler)
        messages = receive(setup.worker_end)
        received = [(m.truncated, list(m.fds)) for m in only(Connections, messages)]
        taken: list[tuple[socket.socket, Any]] = []
        acceptor = taking_acceptor(setup.worker_end, taken)
        acceptor.on_messages(messages)
        acceptor.flush()
        peers = [peer for _, peer in taken]
        answer_each(taken)
        still_open = [fd for _, fds in received for fd in fds if _is_open(fd)]
        return {"received": received, "peers": peers, "still_open": still_open, "warnings": handler.lines,
                "resume_at": acceptor.resume_at}

    child = in_child_with_free_slots(3, worker_short_of_descriptors)
    # Both messages are read before either is handled: the second finds no slot left.
    assert [(truncated, len(fds)) for truncated, fds in child["received"]] == [(True, 3), (True, 0)]
    assert child["peers"] == [list(client.getsockname()) for client in setup.clients[:3]]
    assert child["still_open"] == []
    assert len(child["warnings"]) == 1 and "got 3 of 5 connections" in child["warnings"][0]
    assert child["resume_at"] > 0  # a message with none: no room for a moment, not passed them again at once

    reports = only(Report, receive(setup.arbiter_end))
    assert [(len(r.taken), len(r.declined), r.room) for r in reports] == [(3, 7, False)]
    assert setup.dispatcher.on_message(WORKER, reports[0]) is None
    assert setup.dispatcher.queued == 7 and setup.dispatcher._unacknowledged == 0
    assert setup.dispatcher._seats[WORKER].has_room is False

    # A worker with room takes the others, in order, and each reaches its client.
    setup.dispatcher._seats[WORKER].has_room = True
    setup.dispatcher.dispatch()
    taken: list[tuple[socket.socket, Any]] = []
    taking_acceptor(setup.worker_end, taken).on_messages(receive(setup.worker_end))
    assert [peer for _, peer in taken] == [client.getsockname() for client in setup.clients[3:]]
    assert setup.arbiter_reads() == [None]
    answer_each(taken)
    assert all(client.recv(10) == b"yours\n" for client in setup.clients)
    assert set(os.listdir("/proc/self/fd")) <= own_fds_before | {str(c.fileno()) for c in setup.clients}


def test_a_handback_the_arbiter_cannot_take_is_counted_as_closed(setup: Setup) -> None:
    """The arbiter out of descriptors: the handed-back connection is lost (the kernel closed
    it), which the arbiter logs; the worker did nothing wrong and is not distrusted."""
    setup.connect(1)
    taken: list[tuple[socket.socket, Any]] = []
    acceptor = taking_acceptor(setup.worker_end, taken)
    acceptor.on_messages(receive(setup.worker_end))
    assert setup.arbiter_reads() == [None]
    acceptor.may_hand_back = True
    ((conn, peer),) = taken
    assert acceptor.hand_back(conn, peer)
    conn.close()

    def arbiter_short_of_descriptors() -> dict[str, Any]:
        handler = CountingHandler()
        logging.getLogger("clusterserve").addHandler(handler)
        (message,) = only(Handback, receive(setup.arbiter_end))
        verdict = setup.dispatcher.on_message(WORKER, message)
        return {"kind": message.kind, "truncated": message.truncated, "fds": len(message.fds), "verdict": verdict,
                "open": setup.dispatcher._seats[WORKER].open, "queued": setup.dispatcher.queued,
                "warnings": handler.lines}

    child = in_child_with_free_slots(0, arbiter_short_of_descriptors)
    assert child == {"kind": "handback", "truncated": True, "fds": 0, "verdict": None, "open": 0, "queued": 0,
                     "warnings": [child["warnings"][0]]}
    assert "could not take 1 of them" in child["warnings"][0]


# -- garbage -------------------------------------------------------------------------------


def report(room: int = 0, taken: tuple[int, ...] = (), declined: tuple[int, ...] = (), closed: int = 0) -> bytes:
    ids = taken + declined
    return struct.pack(f"<BBHHQ{len(ids)}Q", 0x11, room, len(taken), len(declined), closed, *ids)


def passed(count: int, records: list[tuple[Any, ...]], code: int = 0x10, record: str = "<QHHII64s") -> bytes:
    return struct.pack("<BxH", code, count) + b"".join(struct.pack(record, *fields) for fields in records)


INET = int(socket.AF_INET)
INET6 = int(socket.AF_INET6)
UNIX = int(socket.AF_UNIX)
GARBAGE = [
    (b"\x7f{}", 0, "unknown kind byte 0x7f"),
    (b"\x03{ not json", 0, "'heartbeat' without a JSON object"),
    (b"\x03[1, 2]", 0, "'heartbeat' without a JSON object"),
    (b"\x11\x00", 0, "a report of 2 bytes"),
    (report(taken=(1, 2))[:-8], 0, "with 2 ids"),
    (report(room=7), 0, "a report with room 7"),
    (report(declined=(0,)), 0, "connection id 0"),
    (report(closed=2**63), 0, "closed connections"),
    (report(taken=(5,)), 1, "1 descriptors with a report"),
    (passed(0, []), 0, "for 0 connections"),
    (passed(254, [(1, INET, 80, 0, 0, b"127.0.0.1")] * 254), 0, "for 254 connections"),
    (passed(2, [(1, INET, 80, 0, 0, b"127.0.0.1")]), 1, "for 2 connections"),
    (passed(1, [(1, INET, 80, 0, 0, b"127.0.0.1")]), 2, "2 descriptors with 1 connections"),
    (passed(2, [(1, INET, 80, 0, 0, b"127.0.0.1")] * 2), 1, "1 descriptors with 2 connections"),
    (passed(1, [(0, INET, 80, 0, 0, b"127.0.0.1")]), 1, "connection id 0"),
    (passed(1, [(1, 99, 80, 0, 0, b"127.0.0.1")]), 1, "address family 99"),
    (passed(1, [(1, INET, 80, 0, 0, b"127.0\x000.1")]), 1, "host"),
    (passed(1, [(1, INET, 80, 0, 0, b"")]), 1, "a port without a host"),
    (passed(1, [(1, UNIX, 0, 0, 0, b"/tmp/x")]), 1, "for family"),
    (passed(1, [(1, INET, 80, 1, 0, b"127.0.0.1")]), 1, "IPv6 fields with an IPv4 address"),
    (passed(1, [(INET, 80, 0, 0, b"999.0.0.1")], code=0x12, record="<HHII64s"), 1, "host '999.0.0.1'"),
    (passed(1, [(INET6, 80, 0, 0, b"127.0.0.1")], code=0x12, record="<HHII64s"), 1, "host '127.0.0.1'"),
]


@pytest.mark.parametrize(("data", "fds", "said"), GARBAGE, ids=[said for _, _, said in GARBAGE])
def test_garbage_is_malformed_and_keeps_its_descriptors(data: bytes, fds: int, said: str) -> None:
    """The receiver gets the descriptors that came with garbage, to close them."""
    arbiter_end, worker_end = Channel.pair()
    sent = [os.open("/dev/null", os.O_RDONLY) for _ in range(fds)]
    try:
        worker_end.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{fds}i", *sent))]
                               if fds else [])
        (message,) = only(Message, receive(arbiter_end))
        assert message.kind == MALFORMED
        assert said in message.fields["error"]
        assert said in (problem(message, round_robin=True) or "")
        assert len(message.fds) == fds
        for fd in message.fds:
            os.close(fd)
    finally:
        for fd in sent:
            os.close(fd)
        arbiter_end.close()
        worker_end.close()


def test_what_a_worker_sends_decodes_back() -> None:
    v6 = ("fe80::1%lo", 8080, 5, 1)
    unpacked = wire.unpack(wire.pack_connections([1, 2, 3], [INET, INET6, UNIX], [("10.0.0.1", 80), v6, None]),
                           [7, 8, 9], truncated=False)
    assert isinstance(unpacked, Connections)
    assert (unpacked.ids, unpacked.peers) == ([1, 2, 3], [("10.0.0.1", 80), v6, None])
    assert wire.unpack(wire.pack_report([4, 5], [6], 2, False), [], truncated=False) == Report((4, 5), (6,), 2,
                                                                                               False, [])
    assert wire.unpack(wire.pack_report([], [], 0, None), [], truncated=False) == Report((), (), 0, None, [])
    assert wire.unpack(wire.pack_handback(INET6, ("::1", 443, 0, 0)), [3], truncated=False) == Handback(
        [INET6], [("::1", 443, 0, 0)], [3], False)
    with pytest.raises(ValueError):
        wire.pack_report(list(range(1, wire.MAX_IDS + 2)), [], 0, None)


def test_a_report_of_connections_never_passed_to_that_worker_is_named(setup: Setup) -> None:
    setup.connect(1)
    (message,) = only(Connections, receive(setup.worker_end))
    other_id = message.ids[0] + 1
    assert setup.dispatcher.on_message(WORKER, Report((other_id,), (), 0, None, [])) == \
        f"it took connection {other_id}, which was not passed to it"
    assert setup.dispatcher.on_message(WORKER, Report((), (other_id,), 0, None, [])) == \
        f"it declined connection {other_id}, which was not passed to it"
    assert setup.dispatcher._unacknowledged == 1  # the one it was passed is still held for it
    for fd in message.fds:
        os.close(fd)


def test_dispatch_messages_are_unknown_outside_round_robin() -> None:
    assert problem(Report((1,), (), 0, None, []), round_robin=False) == "unknown kind 'report'"
    assert problem(Handback([INET], [None], [5], False), round_robin=False) == "unknown kind 'handback'"
    assert problem(Connections([1], [INET], [None], [5], False), round_robin=True) == "unknown kind 'connections'"
