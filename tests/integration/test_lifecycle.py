"""The arbiter's lifecycle with real processes: start, serve, restart, stop."""

import os
import signal
import time

import pytest

from tests.harness import running


@pytest.fixture(scope="module")
def four_workers():
    with running(["tests.apps.basic:app", "-w", "4"], workers=4) as server:
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
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = four_workers.workers()
        if len(now) == 4 and victim not in now:
            break
        time.sleep(0.05)
    assert len(now) == 4 and victim not in now
    assert four_workers.get("/")[0] == 200


def test_term_is_graceful_and_exits_zero(start_server):
    server = start_server(["tests.apps.basic:slow", "-w", "2"], workers=2)
    conn = server.http()
    conn.request("GET", "/?seconds=1.5")
    time.sleep(0.3)
    server.send(signal.SIGTERM)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"slept 1.5\n"
    assert server.wait() == 0
    assert server.workers() == []
