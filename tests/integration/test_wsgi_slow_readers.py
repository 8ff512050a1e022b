"""Clients that read a large response slowly must not stall the WSGI worker.

With the default ``--threads 1`` the loop thread runs the app; the part of
a response that does not fit the socket buffer is written by the loop as
the socket drains, so other clients are served meanwhile.  A write that
makes no progress for ``timeout`` closes the connection
(test_wsgi_slow_clients.py: a client that stops reading).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.apps.hardening import PATTERN
from tests.harness import ServerProcess, running, wait_until
from tests.integration.test_wsgi_http import Conn

pytestmark = pytest.mark.http_path

APP = "tests.apps.hardening:app"
BIG = 20 * 1024 * 1024
SLOW_READERS = 4
NORMAL_REQUESTS = 5


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(PATTERN * (BIG // len(PATTERN)))
    return path


def big_request(kind: str, big_file: Path) -> bytes:
    return f"GET /big?size={BIG}&kind={kind}&path={big_file} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


class SlowReader(threading.Thread):
    """Asks for a large response, then reads 16 KiB every 50 ms (about 320 KB/s)."""

    def __init__(self, server: ServerProcess, request: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sock = server.connect(timeout=10)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.request = request
        self.stop = stop
        self.received = 0

    def run(self) -> None:
        try:
            self.sock.sendall(self.request)
            while not self.stop.is_set():
                data = self.sock.recv(16384)
                if not data:
                    return
                self.received += len(data)
                time.sleep(0.05)
        except OSError:
            pass
        finally:
            self.sock.close()


def normal_get(server: ServerProcess, timeout: float) -> float | None:
    """Seconds for one GET on a new connection; None if it failed or took over ``timeout``."""
    started = time.monotonic()
    try:
        with Conn(server, timeout=timeout) as conn:
            if conn.get("/ignore", headers="Connection: close\r\n").status != 200:
                return None
    except (OSError, EOFError):
        return None
    return time.monotonic() - started


@pytest.mark.parametrize(("dispatch", "kind", "threads"), [
    ("shared", "chunks", 1), ("shared", "single", 1), ("shared", "file", 1),
    ("round-robin", "chunks", 1), ("reuseport", "chunks", 1), ("shared", "chunks", 2),
])
def test_slow_readers_do_not_stall_other_clients(dispatch, kind, threads, big_file):
    """2 workers, default --threads 1: 4 clients read a 20 MB response slowly; 5 normal
    requests are all served within 20 s (each in under 2 s).  Also with a pool of 2
    threads, fewer than the slow readers."""
    with running([APP, "-w", "2", "--dispatch", dispatch, "--threads", str(threads)],
                 workers=2) as server:
        stop = threading.Event()
        readers = [SlowReader(server, big_request(kind, big_file), stop) for _ in range(SLOW_READERS)]
        try:
            for reader in readers:
                reader.start()
            assert wait_until(lambda: any(r.received for r in readers), timeout=10)
            time.sleep(0.5)
            ends = time.monotonic() + 20
            latencies = [normal_get(server, timeout=max(0.1, ends - time.monotonic()))
                         for _ in range(NORMAL_REQUESTS)]
            assert all(latency is not None and latency < 2.0 for latency in latencies), latencies
            # Every slow reader is being answered, and none is done: they were slow.
            assert all(r.received for r in readers), [r.received for r in readers]
            assert all(r.is_alive() and r.received < BIG for r in readers), [r.received for r in readers]
        finally:
            stop.set()
            for reader in readers:
                reader.join(5)


@pytest.mark.parametrize("kind", ["chunks", "single", "file"])
def test_a_response_written_as_the_socket_drains_arrives_whole(kind, big_file):
    """While two clients read a 20 MB response in bursts, with pauses that fill the
    socket buffer, other requests are served; every byte arrives, in order."""
    with running([APP, "-w", "1"], workers=1) as server:
        bodies: list[bytes] = []

        def read_whole() -> None:
            with Conn(server, timeout=20) as conn:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                conn.send(big_request(kind, big_file))
                head = conn._line()
                while conn._line():
                    pass
                assert head.startswith(b"HTTP/1.1 200 ")
                chunks = []
                while len(conn.buffer) + sum(map(len, chunks)) < BIG:
                    chunks.append(conn.sock.recv(1 << 20))
                    assert chunks[-1], "closed before the end of the body"
                    if len(chunks) % 16 == 0:
                        time.sleep(0.05)
                bodies.append(conn.buffer + b"".join(chunks))

        readers = [threading.Thread(target=read_whole, daemon=True) for _ in range(2)]
        for reader in readers:
            reader.start()
        served = 0
        while any(reader.is_alive() for reader in readers) and served < 200:
            assert normal_get(server, timeout=5) is not None
            served += 1
        for reader in readers:
            reader.join(30)
        assert len(bodies) == 2
        expected = PATTERN * (BIG // len(PATTERN))
        assert all(body == expected for body in bodies)
        assert served > 0


@pytest.mark.parametrize("kind", ["chunks", "file"])
def test_over_tls_the_rest_of_a_response_is_written_as_the_socket_drains(kind, big_file, tmp_path):
    """The same over TLS (where a file goes through the TLS layer, not sendfile): a client
    that pauses while reading gets every byte, and other clients are served meanwhile."""
    from tests.integration.test_tls import Certs

    certs = Certs(tmp_path)
    context = certs.client_context()
    with running([APP, "-w", "1", "--certfile", str(certs.server_pem)], workers=1) as server:
        raw = socket.create_connection((server.host, server.port), timeout=20)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(big_request(kind, big_file))
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.5)  # the socket buffers fill: the worker must go on with others
            for _ in range(3):
                plain = socket.create_connection((server.host, server.port), timeout=5)
                with context.wrap_socket(plain, server_hostname="127.0.0.1") as other:
                    other.sendall(b"GET /ignore HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    assert other.recv(65536).startswith(b"HTTP/1.1 200 ")
            chunks = [body]
            received = len(body)
            while received < BIG:
                chunk = tls.recv(1 << 20)
                assert chunk, f"closed after {received} bytes"
                chunks.append(chunk)
                received += len(chunk)
        assert b"".join(chunks) == PATTERN * (BIG // len(PATTERN))
