"""``round-robin`` dispatch: the arbiter accepts and hands each connection to a worker."""

import collections
import http.client
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import pid_on_new_connection, running

pytestmark = pytest.mark.http_path

RR = ["--dispatch", "round-robin"]


@pytest.fixture(scope="module")
def four_workers():
    # Spare app threads: a worker that is briefly busy (all threads in use) is skipped
    # by design; these tests measure the least-loaded choice itself.
    with running(["tests.apps.basic:app", "-w", "4", "--threads", "4", *RR], workers=4) as server:
        yield server


def pid_of(body: bytes) -> int:
    return int(body.split()[-1])


def read_response(sock: socket.socket) -> bytes:
    """The body of one response read from ``sock``, which stays open."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200
    return response.read()


def test_new_connections_spread_evenly(four_workers):
    with ThreadPoolExecutor(16) as pool:
        counts = collections.Counter(pool.map(lambda _: pid_on_new_connection(four_workers), range(2000)))
    assert set(counts) == set(four_workers.workers())
    mean = 2000 / 4
    assert all(abs(n - mean) <= 0.2 * mean for n in counts.values()), counts


def assert_long_lived_connections_spread_evenly(server) -> None:
    """50 keep-alive connections opened at once (as wrk -c50 does) land 12 or 13 per worker."""
    sockets = [server.connect(timeout=10) for _ in range(50)]
    time.sleep(0.5)  # as wrk does: every connection is open before the first request
    try:
        for sock in sockets:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        counts = collections.Counter(pid_of(read_response(sock)) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    mean = 50 / 4
    assert len(counts) == 4 and all(abs(n - mean) <= 0.2 * mean for n in counts.values()), counts


def test_long_lived_connections_spread_evenly(four_workers):
    assert_long_lived_connections_spread_evenly(four_workers)


def test_a_busy_worker_gets_no_new_connections(start_server):
    server = start_server(["tests.apps.basic:slow", "-w", "2", "--threads", "1", *RR], workers=2)
    started = time.monotonic()
    slow = server.http()
    slow.request("GET", "/?seconds=1.5")
    time.sleep(0.3)
    answered = [server.get("/?seconds=0.01")[0] for _ in range(6)]
    # With one thread per worker, only the other worker could have served them this soon.
    assert answered == [200] * 6 and time.monotonic() - started < 1.2
    assert slow.getresponse().read() == b"slept 1.5\n"


def test_connections_wait_in_the_arbiter_when_every_worker_is_busy(start_server):
    server = start_server(["tests.apps.basic:slow", "-w", "1", "--threads", "1", *RR], workers=1)
    started = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: server.get("/?seconds=0.3")[0], range(5)))
    assert results == [200] * 5
    assert time.monotonic() - started >= 1.4  # one at a time, none refused


def test_queued_connection_survives_the_death_of_a_worker(start_server):
    server = start_server(["tests.apps.basic:slow", "-w", "2", "--threads", "1", *RR], workers=2)
    busy = []
    for _ in range(2):
        conn = server.http()
        conn.request("GET", "/?seconds=2")
        busy.append(conn)
    time.sleep(0.4)  # both workers are busy now; the next connection waits in the arbiter
    queued = {}
    thread = threading.Thread(target=lambda: queued.update(result=server.get("/?seconds=0")))
    thread.start()
    time.sleep(0.3)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=15)
    assert queued["result"][0] == 200
    for conn in busy:
        conn.close()


def test_long_lived_connections_spread_evenly_over_asgi_workers():
    with running(["tests.apps.asgi_apps:app", "-w", "4", *RR], workers=4) as server:
        assert_long_lived_connections_spread_evenly(server)
