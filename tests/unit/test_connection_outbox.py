"""The connection's outbox on a real socketpair: written as far as the socket takes
it, the rest kept in order until the socket drains."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clusterserve.http.codecs import codec_factory
from clusterserve.http.connection import FileSlice, HeadLimits, HttpConnection

BLOCK = bytes(range(256)) * 256  # 64 KiB


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(5)
    connection = HttpConnection(server, None, HeadLimits(0, 0, 0), 1.0, codec_factory("h11"))
    yield connection, client
    server.close()
    client.close()


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        data += sock.recv(count - len(data))
    return bytes(data)


def test_what_the_socket_does_not_take_waits_in_order(pair):
    connection, client = pair
    body = BLOCK * 160  # 10 MiB: more than any socket buffer
    connection.hold(b"head\r\n")
    connection.queue(body)
    assert connection.unsent
    connection.queue(b"tail")  # behind the rest, not written past it
    received = bytearray()
    while connection.unsent:
        received += client.recv(1 << 20)
        connection.write_some()
    received += read_exactly(client, len(b"head\r\n") + len(body) + 4 - len(received))
    assert bytes(received) == b"head\r\n" + body + b"tail"


def test_a_file_slice_goes_out_with_sendfile_as_the_socket_drains(pair, tmp_path: Path):
    connection, client = pair
    path = tmp_path / "f"
    path.write_bytes(b"skip" + BLOCK * 100)
    with path.open("rb") as file:
        connection.hold(b"head")
        connection.queue(FileSlice(file, 4, len(BLOCK) * 100))
        received = bytearray()
        while connection.unsent:
            received += client.recv(1 << 20)
            connection.write_some()
    received += read_exactly(client, 4 + len(BLOCK) * 100 - len(received))
    assert bytes(received) == b"head" + BLOCK * 100


def test_drain_gives_up_after_io_timeout_without_progress(pair):
    connection, _client = pair
    connection.queue(BLOCK * 160)
    with pytest.raises(TimeoutError):
        connection.drain()


def test_a_file_shorter_than_its_slice_is_an_error(pair, tmp_path: Path):
    connection, _client = pair
    path = tmp_path / "f"
    path.write_bytes(b"short")
    with path.open("rb") as file, pytest.raises(OSError):
        connection.queue(FileSlice(file, 0, 100))
