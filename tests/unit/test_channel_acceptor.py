"""The round-robin worker's side of the channel, over a real socketpair and real TCP connections."""

import socket

import pytest

from clusterserve.channel import Channel
from clusterserve.dispatch import wire
from clusterserve.dispatch.round_robin import ChannelAcceptor
from clusterserve.dispatch.wire import Report

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


def pass_connections(arbiter_end: Channel, ids: list[int], conns: list[socket.socket]) -> None:
    payload = wire.pack_connections(ids, [int(c.family) for c in conns], [c.getpeername() for c in conns])
    assert arbiter_end.send_bytes(payload, [c.fileno() for c in conns])


def test_a_connection_is_acknowledged_before_the_worker_reads_it(tcp_pair):
    """Were the worker killed after reading the request but before acknowledging, the
    arbiter would pass the connection on and the client would wait for ever."""
    _, accepted = tcp_pair
    arbiter_end, worker_end = Channel.pair()
    reports_seen_at_take = []
    peers = []

    def on_connection(conn, peer):
        reports_seen_at_take.extend(m for m in arbiter_end.receive() if isinstance(m, Report))
        peers.append(peer)
        conn.close()

    acceptor = ChannelAcceptor(worker_end, on_connection, has_room=lambda: True, can_hold=lambda: True)
    pass_connections(arbiter_end, [7], [accepted])
    pass_connections(arbiter_end, [8], [accepted])
    acceptor.on_messages(worker_end.receive())

    # One report for the connections of one read, sent before the first is handed on.
    assert [(m.taken, m.declined) for m in reports_seen_at_take] == [((7, 8), ())]
    assert acceptor.accepted == 2
    assert peers == [accepted.getpeername()] * 2
    arbiter_end.close()
    worker_end.close()


def test_a_worker_that_cannot_hold_declines_without_reading(tcp_pair):
    client, accepted = tcp_pair
    arbiter_end, worker_end = Channel.pair()
    taken = []
    acceptor = ChannelAcceptor(worker_end, lambda conn, peer: taken.append(conn),
                               has_room=lambda: False, can_hold=lambda: False)
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    pass_connections(arbiter_end, [3], [accepted])
    acceptor.on_messages(worker_end.receive())

    assert taken == []
    (report,) = arbiter_end.receive()
    assert (report.taken, report.declined, report.room) == ((), (3,), False)
    assert accepted.recv(100, socket.MSG_PEEK).startswith(b"GET / ")  # still there for another worker
    arbiter_end.close()
    worker_end.close()


def test_closes_go_out_with_the_next_report_or_when_due(monkeypatch):
    """A close alone waits (a message per close would wake the arbiter per connection); it
    goes out with the next acknowledgement, once the closes are half of what the arbiter
    counts open here, or once CLOSE_REPORT_DELAY has passed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        clients = [socket.create_connection(listener.getsockname()) for _ in range(7)]
        accepted = [listener.accept()[0] for _ in clients]
    arbiter_end, worker_end = Channel.pair()
    acceptor = ChannelAcceptor(worker_end, lambda conn, peer: conn.close(), has_room=lambda: True,
                               can_hold=lambda: True)
    try:
        pass_connections(arbiter_end, [1, 2, 3, 4], accepted[:4])
        acceptor.on_messages(worker_end.receive())
        assert [(m.taken, m.closed, m.room) for m in arbiter_end.receive()] == [((1, 2, 3, 4), 0, True)]

        acceptor.connection_closed()
        acceptor.flush()
        assert arbiter_end.receive() == []  # 1 of 4
        assert acceptor.resume_at > 0  # the loop wakes by then to send it
        pass_connections(arbiter_end, [5], accepted[4:5])
        acceptor.on_messages(worker_end.receive())
        assert [(m.taken, m.closed) for m in arbiter_end.receive()] == [((5,), 1)]

        acceptor.connection_closed()
        acceptor.flush()
        assert arbiter_end.receive() == []  # 1 of 4
        acceptor.connection_closed()
        acceptor.flush()
        assert [(m.taken, m.closed) for m in arbiter_end.receive()] == [((), 2)]  # 2 of 4

        pass_connections(arbiter_end, [6, 7], accepted[5:])
        acceptor.on_messages(worker_end.receive())
        assert [(m.taken, m.closed) for m in arbiter_end.receive()] == [((6, 7), 0)]
        monkeypatch.setattr("clusterserve.dispatch.round_robin.CLOSE_REPORT_DELAY", 0.0)
        acceptor.connection_closed()
        acceptor.flush()
        assert [(m.taken, m.closed) for m in arbiter_end.receive()] == [((), 1)]  # 1 of 4, but due
        assert acceptor.resume_at == 0
    finally:
        for sock in clients + accepted:
            sock.close()
        arbiter_end.close()
        worker_end.close()
