"""A flood of idle connections larger than the open-file limit must not take the
service down, in any dispatch mode, for either interface.

The server runs with a soft RLIMIT_NOFILE of 1,024 (this process's own limit
is raised to hold the flood).  3,000 connections are opened and send nothing,
as a slowloris attacker's would; then normal requests on new connections
must still be served, and the error log must stay small (out of descriptors,
an accept loop that does not back off logs a line per spin).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import ROOT, ServerProcess
from tests.slow_clients import raise_open_file_limit

pytestmark = pytest.mark.http_path

SERVER_OPEN_FILES = 1024
FLOOD = 3000
NORMAL_REQUESTS = 10
MAX_LOG = 2 * 1024 * 1024


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def app(request):
    return {"wsgi": "tests.apps.basic:app", "asgi": "tests.apps.asgi_apps:app"}[request.param]


def open_flood(server: ServerProcess, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing; connected without waiting (the kernel
    completes what the listen queues have room for)."""
    flood = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((server.host, server.port))
        flood.append(sock)
    return flood


def normal_request(server: ServerProcess, timeout: float) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 ") and b"hello from" in data


def test_normal_requests_are_served_through_a_flood_of_idle_connections(start_server, dispatch, app):
    raise_open_file_limit(FLOOD + 512)
    server = start_server([app, "-w", "2", "--dispatch", dispatch], workers=2, open_files=SERVER_OPEN_FILES)
    flood = open_flood(server, FLOOD)
    try:
        time.sleep(1.0)  # the server takes in what it can
        served = [normal_request(server, timeout=3.0) for _ in range(NORMAL_REQUESTS)]
        assert server.proc is not None and server.proc.poll() is None, "the arbiter exited"
        log_size = server.log_path.stat().st_size
        assert sum(served) >= 8, f"{sum(served)} of {NORMAL_REQUESTS} served; log {log_size} bytes"
        assert log_size < MAX_LOG, f"the log grew to {log_size} bytes"
    finally:
        for sock in flood:
            sock.close()
    assert normal_request(server, timeout=5.0)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("mode", ["shared", "round-robin"])
def test_a_worker_out_of_descriptors_leaves_connections_to_the_others(start_server, mode):
    """One worker's app takes every descriptor it has left, for good: that worker backs off
    its accepting (and logs so, seldom); the other worker serves every request.  (Not in
    reuseport mode: there the kernel hashes some connections to that worker's socket.)"""
    server = start_server(["tests.apps.hardening:app", "-w", "2", "--dispatch", mode, "--keep-alive", "0"],
                          workers=2, open_files=SERVER_OPEN_FILES)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /hoard_descriptors HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = sock.recv(4096)
    assert b"holding " in answer, answer
    started = time.monotonic()
    served = [hardening_request(server, timeout=3.0) for _ in range(NORMAL_REQUESTS)]
    assert all(served), served
    assert time.monotonic() - started < 15  # a connection may wait for the next heartbeat's sweep
    time.sleep(1.0)  # what a spinning accept loop would log meanwhile
    assert server.log_path.stat().st_size < MAX_LOG
    assert server.proc is not None and server.proc.poll() is None


def hardening_request(server: ServerProcess, timeout: float) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
            sock.sendall(b"GET /ignore HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 ")


def open_file_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_rlimit_nofile_raises_the_limit_of_the_arbiter_and_its_workers(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "2", "--rlimit-nofile", "4096"],
                          workers=2, open_files=SERVER_OPEN_FILES)
    assert [open_file_limit(pid) for pid in [server.pid, *server.workers()]] == [4096] * 3
    assert "holds at most" not in server.log()


def test_without_rlimit_nofile_a_worker_says_how_many_connections_it_can_hold(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "1"], workers=1, open_files=SERVER_OPEN_FILES)
    assert open_file_limit(server.workers()[0]) == SERVER_OPEN_FILES
    server.wait_for_log(r"holds at most \d+ connections: the open-file limit is 1024 \(see rlimit_nofile\)")


def test_an_rlimit_nofile_that_cannot_be_had_is_a_configuration_error():
    done = subprocess.run([sys.executable, "-m", "clusterserve", "tests.apps.basic:app",
                           "--rlimit-nofile", str(2**31 - 1)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "setting 'rlimit_nofile'" in done.stderr and "open files" in done.stderr
