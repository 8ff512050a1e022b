"""Slow, idle and greedy clients, and the measurements the WSGI and the ASGI worker both
have to pass with the same bounds (tests/integration/test_*_slow_clients.py).

Each ``assert_*`` function drives a running server of tests.apps.hardening or
tests.apps.asgi_hardening (the same routes) and fails the test that calls it.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.harness import ServerProcess, wait_for_line, wait_until
from tests.integration.test_wsgi_http import Conn

HEAD_TIMEOUT = 3
SLOW_CLIENTS = 200
IDLE_CLIENTS = 500
# This process and the server it starts hold a descriptor per connection, and some more.
OPEN_FILES_FOR_SLOW_AND_IDLE = 4 * (SLOW_CLIENTS + IDLE_CLIENTS) + 200


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


def assert_slow_heads_and_idle_connections_do_not_delay_normal_requests(server: ServerProcess) -> None:
    """IDLE_CLIENTS keep-alive connections, then SLOW_CLIENTS heads sent a byte a second:
    normal requests meanwhile take under a second, each slow head gets a 408 at
    HEAD_TIMEOUT (the server's ``--header-timeout``), the idle connections are still served.
    Needs OPEN_FILES_FOR_SLOW_AND_IDLE descriptors (``raise_open_file_limit``)."""
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


def assert_slow_head_is_dropped_two_seconds_after_its_first_byte(server: ServerProcess) -> None:
    """For a server with ``--header-timeout 2``: a connection silent for a second, then a head
    a byte at a time, gets its 408 two seconds after the first byte."""
    with Conn(server) as conn:
        time.sleep(1.0)  # connected, silent: the clock starts at the first byte
        started = time.monotonic()
        for byte in b"GET /ignore HTTP/1.1\r\nHost: t\r\n":
            conn.send(bytes([byte]))
            if conn.closed_within(0.1):
                break
        raw = conn.response()
        assert raw.status == 408
        assert 1.8 < time.monotonic() - started < 3.5


def assert_next_connection_waits_until_one_closes(server: ServerProcess, held: list[Conn]) -> None:
    """``held`` fills the worker's ``worker_connections``: a request on one more connection is
    not answered until one of them closes (it waits in the kernel's queue), then it is."""
    with Conn(server) as extra:  # connected: the kernel queued it
        extra.send(b"GET /ignore HTTP/1.1\r\nHost: t\r\n\r\n")
        assert not extra.closed_within(1.0), "an 11th connection was served"
        assert extra.buffer == b""
        held.pop().sock.close()
        extra.sock.settimeout(3)
        assert extra.response().status == 200


def assert_stalled_body_gets_408_after_two_seconds(server: ServerProcess, target: str) -> None:
    """For a server with ``--timeout 2``: a POST to ``target`` that sends 10 of its 100 body
    bytes and stalls is answered 408 with a close within the bounds of that timeout."""
    with Conn(server) as conn:
        started = time.monotonic()
        conn.send(f"POST {target} HTTP/1.1\r\nHost: t\r\n"
                  "Content-Length: 100\r\n\r\n".encode() + b"z" * 10)
        raw = conn.response()
        assert raw.status == 408 and raw.headers["connection"] == "close"
        assert 1.8 < time.monotonic() - started < 4.5


def assert_app_is_not_pulled_for_a_client_that_reads_nothing(server: ServerProcess, marker: Path) -> float:
    """Back-pressure: GET /endless on a connection that never reads; the app must see the client
    go (it writes ``marker``) having produced fewer than 200 chunks of 64 KiB, and the worker
    must answer at once afterwards. Returns the seconds from the request until the app saw it."""
    with Conn(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        started = time.monotonic()
        conn.send(f"GET /endless?marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert wait_for_line(marker, timeout=8), "the app never saw the client go"
        seen_after = time.monotonic() - started
        produced = int(marker.read_text().split()[2])
    assert produced < 200, f"{produced} chunks of 64 KiB produced for a client that read nothing"
    assert timed_get(server) < 1.0
    return seen_after


def _keep_alive_loop(server: ServerProcess, stop: threading.Event, counts: list[int]) -> None:
    with Conn(server) as conn:
        while not stop.is_set():
            assert conn.get("/sleep?s=0.01").status == 200
            counts.append(1)


def assert_new_connections_are_not_starved_by_keep_alive_clients(server: ServerProcess) -> None:
    """Two clients loop keep-alive requests while a third opens a connection per request: on
    one worker with one app thread, each of its requests takes under a second."""
    stop = threading.Event()
    counts: list[int] = []
    loops = [threading.Thread(target=_keep_alive_loop, args=(server, stop, counts), daemon=True)
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
