"""The round-robin worker's side of the channel, over a real socketpair and real TCP connections."""

import socket

import pytest

from clusterserve.channel import CONNECTION, REPORT, Channel
from clusterserve.dispatch.round_robin import ChannelAcceptor

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def tcp_pair():
    """Yield a connected (client, server-side) pair of sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    yield client, accepted
    client.close()
    accepted.close()


def test_a_connection_is_acknowledged_before_the_worker_reads_it(tcp_pair):
    """Were the worker killed after reading the request but before acknowledging, the
    arbiter would pass the connection on and the client would wait for ever."""
    _, accepted = tcp_pair
    arbiter_end, worker_end = Channel.pair()
    reports_seen_at_take = []

    def on_connection(conn, peer):
        reports_seen_at_take.extend(m for m in arbiter_end.receive() if m.kind == REPORT)
        conn.close()

    acceptor = ChannelAcceptor(worker_end, on_connection, has_room=lambda: True, can_hold=lambda: True)
    assert arbiter_end.send(CONNECTION, fds=[accepted.fileno()], id=7, family=int(accepted.family))
    assert arbiter_end.send(CONNECTION, fds=[accepted.fileno()], id=8, family=int(accepted.family))
    acceptor.on_messages(worker_end.receive())

    assert [m.fields["taken"] for m in reports_seen_at_take] == [[7, 8]]
    assert acceptor.accepted == 2
    arbiter_end.close()
    worker_end.close()


def test_a_worker_that_cannot_hold_declines_without_reading(tcp_pair):
    client, accepted = tcp_pair
    arbiter_end, worker_end = Channel.pair()
    taken = []
    acceptor = ChannelAcceptor(worker_end, lambda conn, peer: taken.append(conn),
                               has_room=lambda: False, can_hold=lambda: False)
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert arbiter_end.send(CONNECTION, fds=[accepted.fileno()], id=3, family=int(accepted.family))
    acceptor.on_messages(worker_end.receive())

    assert taken == []
    assert [(m.kind, m.fields) for m in arbiter_end.receive()] == [("decline", {"id": 3})]
    assert accepted.recv(100, socket.MSG_PEEK).startswith(b"GET / ")  # still there for another worker
    arbiter_end.close()
    worker_end.close()
