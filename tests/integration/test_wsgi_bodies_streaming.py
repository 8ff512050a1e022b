"""Bodies both ways and response headers in the WSGI worker (issue 7, items 4 and 5).

wsgi.input streams (the worker's memory stays flat under a large upload),
``Expect: 100-continue`` is answered only when the app reads, an unread body
leaves the connection usable or closes it; responses are sent as the app
produces them, never with a body for HEAD, 204 or 304, and a length that
disagrees with ``Content-Length`` closes the connection.  Response headers:
``Date`` and ``Server`` (both can be turned off), hop-by-hop headers from
the app dropped, CR/LF in a header refused with a 500.
"""

from __future__ import annotations

import re
import time

import pytest

from bench.bodies import MIB, PeakRss
from tests.harness import running
from tests.integration.test_wsgi_http import Conn, pid_of

pytestmark = pytest.mark.http_path

APP = "tests.apps.hardening:app"


@pytest.fixture(scope="module")
def server():
    with running([APP, "-w", "1", "--threads", "2"], workers=1) as server:
        yield server


# -- request bodies -----------------------------------------------------------------------


def test_large_upload_read_in_chunks_keeps_the_worker_rss_flat(server):
    size = 64 * MIB
    with Conn(server, timeout=30) as conn:
        worker = pid_of(conn.get("/ignore"))
        with PeakRss(worker) as rss:
            conn.send(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"u" * MIB
            for _ in range(size // MIB):
                conn.send(block)
            raw = conn.response()
    assert raw.body == b"%d\n" % size
    growth = rss.peak - rss.before
    assert growth < 8, f"worker RSS grew by {growth:.1f} MiB for a {size // MIB} MiB upload"


def test_100_continue_waits_until_the_app_reads(server):
    with Conn(server) as conn:
        started = time.monotonic()
        conn.send(b"POST /read?delay=0.5 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.head()
        assert interim.status == 100
        assert time.monotonic() - started >= 0.45, "100 Continue came before the app read"
        conn.send(b"hello")
        assert conn.response().body == b"5\n"


def test_app_that_never_reads_sends_no_100_and_the_body_never_comes(server):
    with Conn(server) as conn:
        conn.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        raw = conn.head()  # a 100 would come first
        assert raw.status == 200
        conn._exact(int(raw.headers["content-length"]))
        # The client was told nothing about its body: the worker cannot keep the connection.
        assert conn.closed_within(2.0)


def test_large_unread_body_closes_the_connection_after_a_correct_response(server):
    with Conn(server) as conn:
        conn.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (200 * 1024)
                  + b"b" * (200 * 1024) + b"GET /ignore HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = conn.response()
        assert (raw.status, raw.body) == (200, b"ignored\n")
        rest = conn.rest()
        assert rest == b"" or rest.startswith(b"HTTP/1.1 200 "), rest[:100]


# -- responses ---------------------------------------------------------------------------------


def test_streamed_chunks_go_out_as_the_app_yields_them(server, tmp_path):
    marker = tmp_path / "marker"
    with Conn(server) as conn:
        conn.send(f"GET /stream_wait?marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = conn.head()
        assert head.headers["transfer-encoding"] == "chunked"
        started = time.monotonic()
        size = int(conn._line(), 16)
        assert conn._exact(size) == b"first\n"
        assert time.monotonic() - started < 2, "the first chunk waited for the second"
        marker.touch()
        assert conn._exact(2) == b"\r\n"
        size = int(conn._line(), 16)
        assert conn._exact(size) == b"second\n"


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_status_drops_the_body_the_app_gives(server, code):
    with Conn(server) as conn:
        raw = conn.get(f"/bodiless?code={code}")
        assert raw.status == code
        assert conn.get("/ignore").body == b"ignored\n"
        assert conn.buffer == b""


@pytest.mark.parametrize("declared, sent, message", [
    (10, 4, "the app sent 4 of the 10 bytes its Content-Length announced"),
    (5, 12, "the app sent more than its Content-Length of 5 bytes"),
])
def test_body_length_disagreeing_with_content_length_is_logged_and_closes(server, declared, sent, message):
    mark = len(server.log())
    with Conn(server) as conn:
        conn.send(f"GET /length?declared={declared}&sent={sent} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = conn.head()
        assert head.headers["content-length"] == str(declared)
        body = conn.rest()  # until the server closes
    assert body == b"x" * min(declared, sent)
    server.wait_for_log(re.escape(f"GET /length?declared={declared}&sent={sent}: {message}; "
                                  "connection closed"), after=mark)


# -- response headers -----------------------------------------------------------------------------


def test_date_and_server_are_added_unless_the_app_sets_them(server):
    with Conn(server) as conn:
        raw = conn.get("/headers")
        assert raw.headers["server"] == "clusterserve"
        assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", raw.headers["date"])
        raw = conn.get("/headers?case=server")
        assert raw.headers["server"] == "mine"  # one value: no second header was added
        assert raw.headers["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_no_server_header_and_no_date_header():
    with running([APP, "-w", "1", "--no-server-header", "--no-date-header"], workers=1) as server, \
            Conn(server) as conn:
        raw = conn.get("/headers")
        assert raw.status == 200
        assert "server" not in raw.headers and "date" not in raw.headers


def test_asgi_worker_takes_the_same_switches():
    app = "tests.apps.asgi_apps:hello"
    with running([app, "-w", "1"], workers=1) as server:
        headers = server.get("/")[1]
        assert headers["server"] == "clusterserve" and "date" in headers
    with running([app, "-w", "1", "--no-server-header", "--no-date-header"], workers=1) as server:
        status, headers, _ = server.get("/")
        assert status == 200 and "server" not in headers and "date" not in headers


def test_hop_by_hop_headers_from_the_app_are_dropped(server):
    with Conn(server) as conn:
        raw = conn.get("/headers?case=hop")
        assert raw.status == 200 and raw.body == b"headers\n"
        for name in ("keep-alive", "transfer-encoding", "upgrade", "proxy-authenticate", "te", "trailer"):
            assert name not in raw.headers, name
        assert "connection" not in raw.headers  # "keep-alive" from the app is not repeated
        assert raw.headers["x-kept"] == "yes"
        assert conn.get("/ignore").status == 200  # the framing was not disturbed


def test_connection_close_from_the_app_closes_the_connection(server):
    with Conn(server) as conn:
        raw = conn.get("/headers?case=close")
        assert raw.headers["connection"] == "close"
        assert conn.closed_within(2.0)


HEADER_REFUSED = r"response header( name)? '[^']+'.*; answered 500"
APP_ERROR = r"Error handling request GET /headers\?case="


@pytest.mark.parametrize(("case", "logged"), [
    ("crlf-value", HEADER_REFUSED), ("lf-value", HEADER_REFUSED), ("crlf-name", HEADER_REFUSED),
    ("space-name", HEADER_REFUSED), ("crlf-status", APP_ERROR + r"[\s\S]*status must be"),
    ("length-twice", APP_ERROR + r"[\s\S]*one Content-Length")])
def test_cr_lf_or_bad_names_in_response_headers_get_a_500_never_a_split(server, case, logged):
    mark = len(server.log())
    with Conn(server) as conn:
        raw = conn.get(f"/headers?case={case}")
        assert raw.status == 500
        assert "set-cookie" not in raw.headers and "x-split" not in raw.headers
        assert b"evil" not in raw.body
    server.wait_for_log(logged, after=mark)
