"""Requests at and over the limits, and what both workers must do with them
(tests/integration/test_*_limits.py): heads for the limit_request_* settings,
refusals, and bodies for limit_request_body.

The body checks drive tests.apps.hardening or tests.apps.asgi_hardening (the same
``/read`` and ``/ignore`` routes) started with ``--limit-request-body``.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import ServerProcess
from tests.integration.test_wsgi_http import Conn

# The servers of the head tests run with these limit_request_line, _fields and _field_size.
LINE, FIELDS, FIELD_SIZE = 100, 8, 80


def refused(server: ServerProcess, data: bytes) -> int:
    """Send ``data`` and return the status; the server must close the connection itself."""
    with Conn(server) as conn:
        conn.send(data)
        raw = conn.response()
        assert raw.headers["connection"].lower() == "close"
        assert conn.closed_within(2.0), "the connection stayed open after a refusal"
    return raw.status


def request_line(length: int) -> bytes:
    """A GET request line of exactly ``length`` bytes (without CRLF)."""
    fixed = len("GET / HTTP/1.1")
    return f"GET /{'a' * (length - fixed)} HTTP/1.1".encode()


def head_with_fields(count: int, size: int = 10) -> bytes:
    """GET /hello with ``count`` header fields (Host included), each ``size`` bytes long with
    its CRLF (as gunicorn counts limit_request_field_size)."""
    fields = ["Host: t"] + [f"X-F{n}: ".ljust(size - 2, "v") for n in range(count - 1)]
    return ("GET /hello HTTP/1.1\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n").encode()


def assert_body_at_the_limit_is_read_whole(server: ServerProcess, limit: int) -> None:
    with Conn(server) as conn:
        conn.send(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % limit + b"x" * limit)
        raw = conn.response()
        assert (raw.status, raw.body) == (200, b"%d\n" % limit)
        assert conn.get("/ignore").status == 200  # and the connection is kept


def assert_content_length_over_the_limit_gets_413_before_the_app(server: ServerProcess, limit: int,
                                                                  marker: Path) -> None:
    """The 413 comes before the body is asked for (``Expect: 100-continue``), and the app
    (which would write ``marker``) is not called."""
    with Conn(server) as conn:
        conn.send(f"POST /read?marker={marker} HTTP/1.1\r\nHost: t\r\n"
                  f"Content-Length: {limit + 1}\r\nExpect: 100-continue\r\n\r\n".encode())
        raw = conn.response()
        assert raw.status == 413 and raw.headers["connection"] == "close"
        assert conn.closed_within(2.0)
    assert not marker.exists(), "the app was called"


def assert_chunked_body_over_the_limit_gets_413(server: ServerProcess, limit: int, target: str) -> None:
    """A chunked POST to ``target`` that grows past ``limit``, 400 bytes a chunk, is answered
    413 with a close (what the app saw of it is the caller's to check)."""
    with Conn(server) as conn:
        conn.send(f"POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(limit // 400 + 1):
            conn.send(b"190\r\n" + b"y" * 400 + b"\r\n")  # 400 bytes a chunk
        raw = conn.response()
        assert raw.status == 413 and raw.headers["connection"] == "close"
        assert conn.closed_within(2.0)
