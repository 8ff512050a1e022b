"""Slow, idle and greedy clients against the WSGI worker (issue 7, items 2 and 3).

Clients that send their head a byte at a time, hold idle keep-alive
connections, trickle or stall their body, or stop reading the response must
not keep normal requests from being answered, nor hold an app thread for
longer than ``timeout``; ``worker_connections`` caps what one worker holds
(idle connections are shed at the cap to let a new one in);
and keep-alive clients must not starve a client that opens a new connection
per request.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

import pytest

from tests.harness import ServerProcess, running, wait_until
from tests.integration.test_wsgi_http import Conn

pytestmark = pytest.mark.http_path

APP = "tests.apps.hardening:app"
HEAD_TIMEOUT = 3
SLOW_CLIENTS = 200
IDLE_CLIENTS = 500


def raise_open_file_limit(needed: int) -> None:
    """This process and the server it starts need a descriptor per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def timed_get(server: ServerProcess, path: str = "/ignore") -> float:
    """Seconds for one GET on a new connection (fails on anything but a 200)."""
    started = time.monotonic()
    with Conn(server, timeout=10) as conn:
        assert conn.get(path, headers="Connection: close\r\n").status == 200
    return time.monotonic() - started


# -- item 3: 200 slow heads and 500 idle keep-alive connections ----------------------------


def test_slow_heads_and_idle_connections_do_not_delay_normal_requests():
    raise_open_file_limit(4 * (SLOW_CLIENTS + IDLE_CLIENTS) + 200)
    args = [APP, "-w", "2", "--threads", "2", "--header-timeout", str(HEAD_TIMEOUT), "--keep-alive", "60"]
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


def test_slow_head_is_dropped_at_the_head_timeout_counted_from_its_first_byte():
    with running([APP, "-w", "1", "--header-timeout", "2"], workers=1) as server, Conn(server) as conn:
        time.sleep(1.0)  # connected, silent: the clock starts at the first byte
        started = time.monotonic()
        for byte in b"GET /ignore HTTP/1.1\r\nHost: t\r\n":
            conn.send(bytes([byte]))
            if conn.closed_within(0.1):
                break
        raw = conn.response()
        assert raw.status == 408
        assert 1.8 < time.monotonic() - started < 3.5


# -- worker_connections ------------------------------------------------------------------


def test_worker_connections_caps_open_connections_and_the_queue_holds_the_rest():
    """Ten connections in the middle of a head: none can be shed, the 11th waits."""
    cap = 10
    with running([APP, "-w", "1", "--worker-connections", str(cap)], workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                conn.send(b"GET /ignore HTTP/1.1\r\n")
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


def test_at_worker_connections_the_longest_idle_connection_makes_room():
    """Ten idle keep-alive connections: an 11th client with a request is served, and the
    connection that had been quiet for the longest is the one closed for it."""
    cap = 10
    with running([APP, "-w", "1", "--worker-connections", str(cap), "--keep-alive", "30"],
                 workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                assert conn.get("/ignore").status == 200
                time.sleep(0.01)
            with Conn(server, timeout=3) as extra:
                assert extra.get("/ignore").status == 200
            assert held[0].closed_within(1.0)
            for conn in held[1:]:
                assert conn.get("/ignore").status == 200
        finally:
            for conn in held:
                conn.sock.close()


# -- body reads and response writes bounded by `timeout` -------------------------------------------


@pytest.fixture(scope="module")
def short_timeout():
    with running([APP, "-w", "1", "--threads", "1", "--timeout", "2"], workers=1) as server:
        yield server


def test_stalled_body_fails_the_read_after_timeout_and_frees_the_thread(short_timeout, tmp_path):
    marker = tmp_path / "marker"
    with Conn(short_timeout) as conn:
        started = time.monotonic()
        conn.send(f"POST /read?marker={marker}&chunk=10 HTTP/1.1\r\nHost: t\r\n"
                  "Content-Length: 100\r\n\r\n".encode() + b"z" * 10)
        raw = conn.response()
        assert raw.status == 408 and raw.headers["connection"] == "close"
        assert 1.8 < time.monotonic() - started < 4.5
    assert marker.read_text().startswith("HttpError: no request body bytes for 2s after 10")
    assert timed_get(short_timeout) < 1.0  # the one app thread is free again


def test_client_that_stops_reading_is_dropped_after_timeout(short_timeout, tmp_path):
    """Back-pressure: the app is not pulled while the client does not read; then the write times out."""
    marker = tmp_path / "marker"
    with Conn(short_timeout) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(f"GET /endless?marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert wait_until(marker.exists, timeout=8), "close() was never called"
        produced = int(marker.read_text().split()[2])
    assert produced < 200, f"{produced} chunks of 64 KiB produced for a client that read nothing"
    assert timed_get(short_timeout) < 1.0


# -- fairness with one app thread ------------------------------------------------------------


def keep_alive_loop(server: ServerProcess, stop: threading.Event, counts: list[int]) -> None:
    with Conn(server) as conn:
        while not stop.is_set():
            assert conn.get("/sleep?s=0.01").status == 200
            counts.append(1)


@pytest.mark.parametrize("dispatch", ["shared", "reuseport", "round-robin"])
def test_new_connections_are_not_starved_by_keep_alive_clients(dispatch):
    """-w 1 --threads 1: two clients loop keep-alive requests, a third opens a connection per request."""
    with running([APP, "-w", "1", "--threads", "1", "--dispatch", dispatch], workers=1) as server:
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
