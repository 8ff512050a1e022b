"""Slow, idle and greedy clients against the ASGI worker, measured as the WSGI
worker's are (tests/integration/test_wsgi_slow_clients.py), with the same bounds.

Heads sent a byte at a time and hundreds of idle keep-alive connections must
not delay normal requests, and each slow head is dropped with a 408 at
``header_timeout``; a stalled body ends with a 408 after ``timeout``; a
client that stops reading is dropped after ``timeout``, and the app is not
pulled meanwhile; ``worker_connections`` caps what one worker holds; and
keep-alive clients do not starve one that opens a connection per request.
On both of uvicorn's protocols.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.harness import running, wait_until
from tests.integration.test_wsgi_http import Conn
from tests.integration.test_wsgi_slow_clients import (
    HEAD_TIMEOUT,
    IDLE_CLIENTS,
    SLOW_CLIENTS,
    keep_alive_loop,
    raise_open_file_limit,
    timed_get,
)

pytestmark = pytest.mark.http_path

APP = "tests.apps.asgi_hardening:app"


@pytest.fixture(scope="module", params=["h11", "httptools"])
def http(request):
    return request.param


def test_slow_heads_and_idle_connections_do_not_delay_normal_requests(http):
    raise_open_file_limit(4 * (SLOW_CLIENTS + IDLE_CLIENTS) + 200)
    args = [APP, "-w", "2", "--http", http, "--header-timeout", str(HEAD_TIMEOUT), "--keep-alive", "60"]
    with running(args, workers=2) as server:
        idle = []
        for _ in range(IDLE_CLIENTS):
            conn = Conn(server)
            assert conn.get("/ignore").status == 200
            idle.append(conn)
        slow = [server.connect(timeout=10) for _ in range(SLOW_CLIENTS)]
        head = b"GET /ignore HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
        first_byte = time.monotonic()
        latencies: list[float] = []
        try:
            sent = 0
            # One header byte per second on every slow connection, normal requests between.
            while time.monotonic() - first_byte < HEAD_TIMEOUT + 2.5:
                for sock in slow:
                    try:
                        sock.send(head[sent:sent + 1])
                    except OSError:
                        pass  # dropped already
                sent += 1
                second_ends = time.monotonic() + 1.0
                while time.monotonic() < second_ends:
                    latencies.append(timed_get(server))
            assert max(latencies) < 1.0, sorted(latencies)[-5:]
            assert len(latencies) > 20

            # Every slow connection was dropped at the head timeout, with a 408.
            dropped = 0
            for sock in slow:
                sock.settimeout(0.5)
                try:
                    data = sock.recv(4096)
                except (TimeoutError, ConnectionResetError):
                    continue
                dropped += data.startswith(b"HTTP/1.1 408 ")
            assert dropped == SLOW_CLIENTS

            # The idle keep-alive connections are still open and served.
            for conn in idle[::50]:
                assert conn.get("/ignore").status == 200
        finally:
            for sock in slow:
                sock.close()
            for conn in idle:
                conn.sock.close()


def test_slow_head_is_dropped_at_the_head_timeout_counted_from_its_first_byte(http):
    with running([APP, "-w", "1", "--http", http, "--header-timeout", "2"], workers=1) as server, \
            Conn(server) as conn:
        time.sleep(1.0)  # connected, silent: the clock starts at the first byte
        started = time.monotonic()
        for byte in b"GET /ignore HTTP/1.1\r\nHost: t\r\n":
            conn.send(bytes([byte]))
            if conn.closed_within(0.1):
                break
        raw = conn.response()
        assert raw.status == 408
        assert 1.8 < time.monotonic() - started < 3.5


def test_silent_new_connection_is_closed_at_the_head_timeout(http):
    with running([APP, "-w", "1", "--http", http, "--header-timeout", "2"], workers=1) as server, \
            Conn(server) as conn:
        started = time.monotonic()
        assert conn.closed_within(4.0)
        assert conn.buffer == b""
        assert 1.8 < time.monotonic() - started < 3.5


def test_worker_connections_caps_open_connections_and_the_queue_holds_the_rest(http):
    cap = 10
    with running([APP, "-w", "1", "--http", http, "--worker-connections", str(cap), "--keep-alive", "30"],
                 workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                assert conn.get("/ignore").status == 200
            with Conn(server) as extra:  # connected: the kernel queued it
                extra.send(b"GET /ignore HTTP/1.1\r\nHost: t\r\n\r\n")
                assert not extra.closed_within(1.0), "an 11th connection was served"
                assert extra.buffer == b""
                held.pop().sock.close()
                extra.sock.settimeout(3)
                assert extra.response().status == 200
        finally:
            for conn in held:
                conn.sock.close()


@pytest.fixture(scope="module")
def short_timeout(http):
    with running([APP, "-w", "1", "--http", http, "--timeout", "2"], workers=1) as server:
        yield server


def test_stalled_body_ends_the_request_after_timeout(short_timeout, tmp_path):
    marker = tmp_path / "marker"
    with Conn(short_timeout) as conn:
        started = time.monotonic()
        conn.send(f"POST /read?marker={marker} HTTP/1.1\r\nHost: t\r\n"
                  "Content-Length: 100\r\n\r\n".encode() + b"z" * 10)
        raw = conn.response()
        assert raw.status == 408 and raw.headers["connection"] == "close"
        assert 1.8 < time.monotonic() - started < 4.5
    assert wait_until(marker.exists, timeout=2)
    assert marker.read_text().startswith("http.disconnect after 10")
    assert timed_get(short_timeout) < 1.0


def test_trickled_body_is_read_whole(short_timeout):
    """Bytes that keep coming, each within timeout, are not a stall (the bound is per wait)."""
    with Conn(short_timeout) as conn:
        conn.send(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            time.sleep(1.2)
            conn.send(bytes([byte]))
        assert conn.response().body == b"4\n"


def test_client_that_stops_reading_is_dropped_after_timeout(short_timeout, tmp_path):
    """Back-pressure: the app is not pulled while the client does not read; then it is dropped."""
    marker = tmp_path / "marker"
    with Conn(short_timeout) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        started = time.monotonic()
        conn.send(f"GET /endless?marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert wait_until(marker.exists, timeout=8), "the app never saw the client go"
        assert 1.8 < time.monotonic() - started < 6.0
        produced = int(marker.read_text().split()[2])
    assert produced < 200, f"{produced} chunks of 64 KiB produced for a client that read nothing"
    assert timed_get(short_timeout) < 1.0


@pytest.mark.parametrize("dispatch", ["shared", "reuseport", "round-robin"])
def test_new_connections_are_not_starved_by_keep_alive_clients(dispatch, http):
    """-w 1: two clients loop keep-alive requests, a third opens a connection per request."""
    with running([APP, "-w", "1", "--http", http, "--dispatch", dispatch], workers=1) as server:
        stop = threading.Event()
        counts: list[int] = []
        loops = [threading.Thread(target=keep_alive_loop, args=(server, stop, counts), daemon=True)
                 for _ in range(2)]
        for thread in loops:
            thread.start()
        try:
            assert wait_until(lambda: len(counts) > 20, timeout=5)
            latencies = [timed_get(server, "/sleep?s=0.01") for _ in range(30)]
        finally:
            stop.set()
            for thread in loops:
                thread.join(5)
        assert max(latencies) < 1.0, sorted(latencies)[-5:]
        assert len(counts) > 60  # the keep-alive clients were served meanwhile
