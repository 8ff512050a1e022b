"""Ctrl-C lets apps clean up: the first SIGINT is a graceful stop bounded by a few
seconds, a second SIGINT or SIGQUIT stops at once; the ASGI lifespan shutdown
runs either way; a request the app has not started gets 503, one it runs never does.

A terminal's Ctrl-C sends SIGINT to the arbiter and every worker at once; the
tests do the same by pid.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time

import pytest

from clusterserve.workers.grace import INTERRUPT_GRACE
from tests.harness import wait_until

SLOW = {"wsgi": "tests.apps.basic:slow", "asgi": "tests.apps.asgi_apps:slow_with_lifespan"}
# The first SIGINT's bound, its margin and the fast stop, with room for a loaded machine.
BOUND = INTERRUPT_GRACE + 1 + 5 + 3


def ctrl_c(server) -> None:
    for pid in [server.pid, *server.workers()]:
        os.kill(pid, signal.SIGINT)


def start(start_server, interface, tmp_path, *args):
    env = {"LIFESPAN_LOG": str(tmp_path / "lifespan.log"), "SLOW_STARTED_LOG": str(tmp_path / "started.log")}
    return start_server([SLOW[interface], "-w", "1", *args], workers=1, env=env)


def wait_for_app_to_start(tmp_path, count: int = 1) -> None:
    """Until the app has begun ``count`` requests: before that, a stop may rightly answer 503."""
    log = tmp_path / "started.log"
    assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= count, timeout=10)


def lifespan_shut_down(tmp_path) -> bool:
    log = tmp_path / "lifespan.log"
    return log.exists() and "shutdown" in log.read_text()


def cut_without_response(conn: http.client.HTTPConnection) -> bool:
    try:
        conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionError):
        return True
    return False


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_ctrl_c_lets_requests_in_flight_finish_and_runs_lifespan_shutdown(start_server, interface, tmp_path):
    server = start(start_server, interface, tmp_path)
    conn = server.http()
    conn.request("GET", "/?seconds=1.5")
    wait_for_app_to_start(tmp_path)
    ctrl_c(server)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"slept 1.5\n"
    assert server.wait(timeout=10) == 0
    assert "Fast stop" not in server.log()
    if interface == "asgi":
        assert lifespan_shut_down(tmp_path)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
@pytest.mark.parametrize("how", ["ctrl-c", "kill -INT arbiter"])
def test_the_first_int_is_bounded_by_a_few_seconds(start_server, interface, tmp_path, how):
    server = start(start_server, interface, tmp_path)
    conn = server.http(timeout=BOUND + 5)
    conn.request("GET", "/?seconds=30")
    wait_for_app_to_start(tmp_path)
    started = time.monotonic()
    ctrl_c(server) if how == "ctrl-c" else server.send(signal.SIGINT)
    assert server.wait(timeout=BOUND) == 0
    assert INTERRUPT_GRACE - 0.5 < time.monotonic() - started < BOUND
    assert cut_without_response(conn)  # never a 503 for a request the app runs
    if interface == "asgi":
        assert lifespan_shut_down(tmp_path)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_second_ctrl_c_stops_at_once(start_server, interface, tmp_path):
    server = start(start_server, interface, tmp_path)
    conn = server.http()
    conn.request("GET", "/?seconds=30")
    wait_for_app_to_start(tmp_path)
    ctrl_c(server)
    time.sleep(0.5)
    started = time.monotonic()
    ctrl_c(server)
    assert server.wait(timeout=10) == 0
    assert time.monotonic() - started < 4
    assert cut_without_response(conn)
    if interface == "asgi":
        assert lifespan_shut_down(tmp_path)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_quit_is_immediate_and_still_runs_lifespan_shutdown(start_server, interface, tmp_path):
    server = start(start_server, interface, tmp_path)
    conn = server.http()
    conn.request("GET", "/?seconds=30")
    wait_for_app_to_start(tmp_path)
    started = time.monotonic()
    server.send(signal.SIGQUIT)
    assert server.wait(timeout=10) == 0
    assert time.monotonic() - started < 4
    assert cut_without_response(conn)
    if interface == "asgi":
        assert lifespan_shut_down(tmp_path)
        assert "Waiting for application shutdown." in server.log()


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT])
def test_a_request_the_app_has_not_started_gets_503(start_server, tmp_path, sig):
    """One app thread, busy: the next request waits, complete, for it; the stop answers it 503."""
    server = start(start_server, "wsgi", tmp_path, "--threads", "1")
    running = server.http(timeout=BOUND + 5)
    running.request("GET", "/?seconds=30")
    wait_for_app_to_start(tmp_path)
    waiting = socket.create_connection((server.host, server.port), timeout=BOUND + 5)
    waiting.sendall(b"GET /?seconds=0 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)  # the worker reads it; its one app thread is busy
    server.send(sig)  # SIGINT: a graceful stop first, then the fast one at its bound
    data = b""
    while chunk := waiting.recv(4096):
        data += chunk
    waiting.close()
    assert data.startswith(b"HTTP/1.1 503 "), data
    assert b"\r\nconnection: close\r\n" in data.lower()
    assert cut_without_response(running)
    assert server.wait(timeout=BOUND) == 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGABRT)


def blocked_signals(pid: int, tid: int) -> set[int]:
    for line in open(f"/proc/{pid}/task/{tid}/status"):
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}
    raise AssertionError("no SigBlk line")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_only_the_main_thread_takes_stop_signals(start_server, tmp_path, threads):
    """The kernel gives a process's signal to any thread that does not block it, and Python
    handles it only in the main thread: one that landed on the watchdog or an app thread
    left a main thread asleep in a request deaf to Ctrl-C until the request ended."""
    server = start(start_server, "wsgi", tmp_path, "--threads", threads)
    for _ in range(4):
        assert server.get("/?seconds=0")[0] == 200
    (worker,) = server.workers()
    helpers = [int(tid) for tid in os.listdir(f"/proc/{worker}/task") if int(tid) != worker]
    assert helpers  # the watchdog (--threads 1), or the app threads the pool started
    for tid in helpers:
        assert set(STOP_SIGNALS) <= blocked_signals(worker, tid), tid
    assert not set(STOP_SIGNALS) & blocked_signals(worker, worker)
