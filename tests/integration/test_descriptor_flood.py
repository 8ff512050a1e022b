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
import time

import pytest

from tests.harness import ServerProcess
from tests.integration.test_wsgi_slow_clients import raise_open_file_limit

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
