"""The round-robin arbiter's side, over real sockets: a worker whose channel filled up
gets connections again once it reads, and what the arbiter holds stays within its bound."""

from __future__ import annotations

import select
import socket

import pytest

from clusterserve.channel import HEARTBEAT, MAY_HAND_BACK, Channel
from clusterserve.dispatch.round_robin import RoundRobinDispatcher
from clusterserve.poller import Poller
from clusterserve.sockets import Listener, TcpAddress

pytestmark = pytest.mark.timeout(20)

# More than one message can pass (253 descriptors).
CLIENTS = 400


@pytest.fixture
def listener():
    sock = socket.create_server(("127.0.0.1", 0), backlog=CLIENTS)
    yield Listener(sock, TcpAddress("127.0.0.1", sock.getsockname()[1]))
    sock.close()


def connect(listener: Listener, count: int) -> list[socket.socket]:
    return [socket.create_connection(listener.sock.getsockname()) for _ in range(count)]


def test_a_worker_whose_channel_filled_up_gets_connections_again_once_it_reads(listener):
    poller = Poller()
    dispatcher = RoundRobinDispatcher([listener], poller, queue_limit=2048, available=lambda pid: True)
    arbiter_end, worker_end = Channel.pair()
    dispatcher.add_worker(1, arbiter_end)
    dispatcher.start()
    while arbiter_end.send(MAY_HAND_BACK):  # the worker is not reading: its channel fills up
        pass
    clients = connect(listener, CLIENTS)
    try:
        for _ in range(20):
            poller.poll(0.05)
        assert dispatcher.queued == CLIENTS, "passed to a full channel"
        passed = 0
        for _ in range(10):  # the worker reads (and here closes) what it was passed, and says so
            for message in worker_end.receive() or []:
                passed += len(message.fds)
                for fd in message.fds:
                    socket.close(fd)
            worker_end.send(HEARTBEAT)
            for message in arbiter_end.receive() or []:
                dispatcher.on_message(1, message)
            dispatcher.dispatch()
        assert dispatcher.queued == 0
        assert passed == CLIENTS
    finally:
        for client in clients:
            client.close()
        arbiter_end.close()
        worker_end.close()
        poller.close()


def test_holding_all_it_may_with_no_worker_free_it_sheds_silent_connections(listener):
    """No worker has room and the arbiter holds its limit of silent connections: it closes
    the oldest of those, so that clients with a request get in line."""
    limit = 40
    poller = Poller()
    dispatcher = RoundRobinDispatcher([listener], poller, queue_limit=limit, available=lambda pid: False)
    dispatcher.start()
    silent = connect(listener, limit)
    talking: list[socket.socket] = []
    try:
        for _ in range(5):
            poller.poll(0.05)
        assert dispatcher.queued == limit
        talking = connect(listener, 5)
        for client in talking:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(10):
            dispatcher.dispatch()
            poller.poll(0.05)
        assert dispatcher.queued <= limit
        queued_peers = {tuple(conn.peer) for conn in dispatcher._queue}
        assert {client.getsockname() for client in talking} <= queued_peers
        closed = select.poll()  # a shed connection reads as end of file (or a reset)
        for client in silent:
            closed.register(client, select.POLLIN)
        assert len(closed.poll(500)) >= len(talking)
    finally:
        for client in silent + talking:
            client.close()
        poller.close()
