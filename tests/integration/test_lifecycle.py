"""The arbiter's lifecycle with real processes: start, serve, restart, stop.

Every test runs in every dispatch mode and for both interfaces.
"""

import os
import signal
import time

import pytest

from tests.harness import is_alive, running, wait_until


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def apps(request):
    """The module with ``app`` (answers its pid) and ``slow`` for one interface."""
    return {"wsgi": "tests.apps.basic", "asgi": "tests.apps.asgi_apps"}[request.param]


@pytest.fixture(scope="module")
def four_workers(dispatch, apps):
    with running([f"{apps}:app", "-w", "4", "--dispatch", dispatch], workers=4) as server:
        yield server


def test_serves_from_several_workers(four_workers):
    status, _, body = four_workers.get("/")
    assert status == 200
    assert body.startswith(b"hello from ")
    assert len(four_workers.workers()) == 4


def test_killed_worker_is_replaced(four_workers):
    before = four_workers.workers()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    four_workers.wait_for_log(rf"pid {victim}\) was killed by SIGKILL")
    assert wait_until(lambda: len(four_workers.workers()) == 4 and victim not in four_workers.workers())
    assert four_workers.get("/")[0] == 200


def test_term_is_graceful_and_exits_zero(start_server, dispatch, apps):
    server = start_server([f"{apps}:slow", "-w", "2", "--dispatch", dispatch], workers=2)
    conn = server.http()
    conn.request("GET", "/?seconds=1.5")
    time.sleep(0.3)
    server.send(signal.SIGTERM)
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("connection") == "close"  # the stop began while it ran
    assert response.read() == b"slept 1.5\n"
    assert server.wait() == 0
    assert server.workers() == []


def test_quit_is_a_fast_stop(start_server, dispatch, apps):
    """(SIGINT, Ctrl-C, is a bounded graceful stop: tests/integration/test_interrupt.py.)"""
    server = start_server([f"{apps}:slow", "-w", "2", "--dispatch", dispatch], workers=2)
    conn = server.http()
    conn.request("GET", "/?seconds=20")
    time.sleep(0.3)
    started = time.monotonic()
    server.send(signal.SIGQUIT)
    assert server.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    with pytest.raises((ConnectionError, OSError)):
        conn.getresponse()
    assert server.workers() == []


def test_ttin_and_ttou_change_the_worker_count(start_server, dispatch, apps):
    server = start_server([f"{apps}:app", "-w", "2", "--dispatch", dispatch], workers=2)
    server.send(signal.SIGTTIN)
    server.wait_ready(3)
    assert len(server.workers()) == 3
    oldest = min(server.workers())
    server.send(signal.SIGTTOU)
    server.wait_for_log(r"Retiring worker 1 ")
    assert wait_until(lambda: len(server.workers()) == 2)
    assert oldest not in server.workers()
    assert server.get("/")[0] == 200
    time.sleep(1.2)  # a retired worker is not replaced
    assert len(server.workers()) == 2


def test_max_requests_retires_and_replaces_the_worker(start_server, dispatch, apps):
    server = start_server([f"{apps}:app", "-w", "1", "--max-requests", "3", "--dispatch", dispatch],
                          workers=1)
    pids = {server.get("/")[2].split()[-1] for _ in range(3)}
    assert len(pids) == 1
    server.wait_for_log(r"reason: max_requests \(served 3 requests\)")
    server.wait_ready(2)  # the replacement is ready before the old worker stops
    (old,) = pids
    server.wait_for_log(rf"pid {int(old)}\) exited with code 0")
    assert server.get("/")[2].split()[-1] not in pids


def test_worker_without_heartbeat_is_killed_and_replaced(start_server, dispatch, apps):
    server = start_server([f"{apps}:app", "-w", "1", "--timeout", "1", "--dispatch", dispatch],
                          workers=1)
    (frozen,) = server.workers()
    os.kill(frozen, signal.SIGSTOP)  # its loop can no longer send heartbeats
    server.wait_for_log(rf"pid {frozen}\) timed out: no heartbeat for 1s", timeout=10)
    server.wait_for_log(rf"pid {frozen}\) was killed by SIGKILL", timeout=10)
    server.wait_ready(2)
    assert server.get("/")[0] == 200


def test_workers_finish_and_exit_when_the_arbiter_dies(start_server, dispatch, apps):
    server = start_server([f"{apps}:slow", "-w", "2", "--dispatch", dispatch], workers=2)
    workers = server.workers()
    conn = server.http()
    conn.request("GET", "/?seconds=1")
    time.sleep(0.3)
    os.kill(server.pid, signal.SIGKILL)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"slept 1.0\n"
    assert wait_until(lambda: not any(is_alive(pid) for pid in workers))
    with pytest.raises(ConnectionRefusedError):
        server.connect(timeout=2)


def test_term_answers_connections_already_queued(start_server, dispatch, apps):
    """Connections waiting in a listen queue at TERM are answered, not reset (gunicorn#2409)."""
    server = start_server([f"{apps}:slow", "-w", "1", "--threads", "1", "--dispatch", dispatch], workers=1)
    busy = server.http()
    busy.request("GET", "/?seconds=1")
    time.sleep(0.3)
    queued = []
    for _ in range(5):  # the only worker is busy: these wait in a queue
        sock = server.connect(timeout=10)
        sock.sendall(b"GET /?seconds=0 HTTP/1.1\r\nHost: t\r\n\r\n")
        queued.append(sock)
    time.sleep(0.2)
    server.send(signal.SIGTERM)
    assert busy.getresponse().status == 200
    for sock in queued:
        reply = b""
        while chunk := sock.recv(65536):  # answered, then closed by the server
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"slept 0.0\n"), reply
    assert server.wait() == 0
    with pytest.raises(ConnectionRefusedError):
        server.connect(timeout=2)


def test_a_stuck_request_gets_its_worker_replaced(start_server, dispatch):
    server = start_server(["tests.apps.basic:slow", "-w", "1", "--threads", "2", "--timeout", "2",
                           "--graceful-timeout", "20", "--dispatch", dispatch], workers=1)
    (old,) = server.workers()
    stuck = server.http(timeout=30)
    stuck.request("GET", "/?seconds=25")
    server.wait_for_log(r"has run for more than 2s", timeout=10)
    server.wait_ready(2)
    assert server.get("/?seconds=0")[0] == 200
    # The old worker leaves once only the stuck request is left, long before it would end.
    server.wait_for_log(rf"pid {old}\) exited with code 0", timeout=10)
    assert old not in server.workers() and len(server.workers()) == 1
    stuck.close()


def test_a_long_request_on_the_loop_thread_keeps_its_worker_alive(start_server, dispatch):
    """With one thread the request runs on the loop thread: the watchdog thread sends the
    heartbeats meanwhile, so a request shorter than the timeout finishes in peace."""
    server = start_server(["tests.apps.basic:slow", "-w", "1", "--threads", "1", "--timeout", "3",
                           "--dispatch", dispatch], workers=1)
    (worker,) = server.workers()
    conn = server.http(timeout=30)
    conn.request("GET", "/?seconds=2.5")  # heartbeats are due every 0.75 s
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"slept 2.5\n"
    assert "no heartbeat" not in server.log() and "abort" not in server.log()
    assert server.workers() == [worker]


def test_a_worker_over_max_worker_memory_is_replaced(start_server, dispatch):
    server = start_server(["tests.apps.basic:hoard", "-w", "1", "--max-worker-memory", "100MB",
                           "--dispatch", dispatch], workers=1)
    (old,) = server.workers()
    for _ in range(2):
        assert server.get("/")[0] == 200
    server.wait_for_log(rf"pid {old}\) will be replaced; reason: max_worker_memory "
                        r"\(RSS \d+ MiB is above 95 MiB\)")
    server.wait_for_log(rf"pid {old}\) exited with code 0")
    assert old not in server.workers() and len(server.workers()) == 1
