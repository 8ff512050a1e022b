"""How a stopping ASGI worker ends its connections without failing a request.

A request in flight, or one that arrives during the stop, is answered with
``Connection: close``; a connection closes only once it has been idle for a
moment with nothing buffered; WebSockets are closed with 1012 once the HTTP
connections are done; a stream that never ends is cut at ``graceful_timeout``.
On both of uvicorn's protocols.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.harness import ServerProcess
from tests.integration.test_wsgi_http import Conn

pytestmark = pytest.mark.http_path

APP = "tests.apps.asgi_apps:long_lived"


@pytest.fixture(params=["h11", "httptools"])
def http(request):
    return request.param


def start(start_server, http: str, *extra: str) -> ServerProcess:
    return start_server([APP, "-w", "1", "--http", http, "--keep-alive", "30", *extra], workers=1)


@pytest.fixture
def server(start_server, http) -> ServerProcess:
    return start(start_server, http)


@contextmanager
def answered_connection(server: ServerProcess) -> Iterator[Conn]:
    """A keep-alive connection on which the server has answered one request."""
    with Conn(server) as conn:
        assert conn.get("/").status == 200
        yield conn


def closed_within(conn: Conn, seconds: float) -> float | None:
    """Seconds until the server closed the connection (nothing else may arrive), or None."""
    started = time.monotonic()
    conn.sock.settimeout(seconds)
    try:
        data = conn.sock.recv(4096)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - started


def test_in_flight_request_is_answered_with_connection_close(server):
    with answered_connection(server) as conn:
        conn.send(b"GET /?sleep=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        server.send(signal.SIGTERM)
        answer = conn.response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert closed_within(conn, 2) is not None
    assert server.wait() == 0


def test_request_arriving_during_the_stop_is_answered_with_connection_close(server):
    with answered_connection(server) as kept, Conn(server) as fresh:
        server.send(signal.SIGTERM)
        server.wait_for_log("stopping: received SIGTERM")
        time.sleep(0.3)  # within the moment an idle connection is given
        for conn in (kept, fresh):
            answer = conn.get("/")
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert closed_within(conn, 2) is not None
    assert server.wait() == 0


def test_idle_connection_is_closed_after_a_moment_not_at_once(server):
    with answered_connection(server) as conn:
        server.send(signal.SIGTERM)
        waited = closed_within(conn, 5)
    assert waited is not None and 0.6 < waited < 2.5, waited  # 1 s idle; not keepalive's 30 s
    assert server.wait() == 0


def test_head_in_progress_at_the_stop_is_completed_and_answered(server):
    with answered_connection(server) as conn:
        conn.send(b"GET /late HTTP/1.1\r\nHo")
        time.sleep(0.2)
        server.send(signal.SIGTERM)
        time.sleep(1.5)  # longer than an idle connection is kept: this one is not idle
        conn.send(b"st: t\r\n\r\n")
        answer = conn.response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert answer.json()["path"] == "/late"
    assert server.wait() == 0


def test_pipelined_requests_during_the_stop_are_all_answered(server):
    with answered_connection(server) as conn:
        server.send(signal.SIGTERM)
        server.wait_for_log("stopping: received SIGTERM")
        conn.send(b"GET /1?sleep=0.2 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        first, second = conn.response(), conn.response()
        assert (first.json()["path"], second.json()["path"]) == ("/1", "/2")
        assert "connection" not in first.headers and second.headers["connection"] == "close"
    assert server.wait() == 0


def test_websocket_is_closed_with_1012_once_http_requests_are_done(server):
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as ws, Conn(server) as conn:
        ws.send("before")
        assert ws.recv(timeout=5) == "echo: before"
        conn.send(b"GET /?sleep=1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        server.send(signal.SIGTERM)
        ws.send("during the drain")  # the WebSocket still works while HTTP drains
        assert ws.recv(timeout=5) == "echo: during the drain"
        assert conn.response().status == 200
        answered = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert time.monotonic() >= answered
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert server.wait() == 0


def test_event_stream_ends_at_graceful_timeout(start_server, http):
    server = start(start_server, http, "--graceful-timeout", "3")
    with Conn(server) as conn:
        conn.send(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        head = conn.head()
        assert head.status == 200 and head.headers["content-type"] == "text/event-stream"
        server.send(signal.SIGTERM)
        stopped = time.monotonic()
        conn.sock.settimeout(10)
        while True:  # events go on during the drain, then the connection closes
            try:
                if not conn.sock.recv(65536):
                    break
            except ConnectionResetError:
                break
        ended = time.monotonic() - stopped
    assert 1.5 < ended < 3.5, ended
    assert server.wait() == 0
    assert "graceful timeout, closing 1 HTTP connections still open" in server.log()
