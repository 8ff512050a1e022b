"""Bad input and the limits against the ASGI worker, in every dispatch mode and on both
of uvicorn's protocols: the WSGI worker's refusals, with its status codes
(tests/integration/test_wsgi_limits.py; tests/limits.py holds what both send),
limit_request_body and header_map."""

from __future__ import annotations

import json

import pytest

from tests.harness import running, wait_for_line
from tests.integration.test_wsgi_http import Conn
from tests.limits import (
    FIELD_SIZE,
    FIELDS,
    LINE,
    assert_body_at_the_limit_is_read_whole,
    assert_chunked_body_over_the_limit_gets_413,
    assert_content_length_over_the_limit_gets_413_before_the_app,
    head_with_fields,
    refused,
    request_line,
)

pytestmark = pytest.mark.http_path

ECHO = "tests.apps.asgi_apps:echo"
HARDENING = "tests.apps.asgi_hardening:app"
BODY_LIMIT = 4000


@pytest.fixture(scope="module", params=["h11", "httptools"])
def http(request):
    return request.param


@pytest.fixture(scope="module")
def server(dispatch, http):
    args = [ECHO, "-w", "1", "--dispatch", dispatch, "--http", http,
            "--limit-request-line", str(LINE), "--limit-request-fields", str(FIELDS),
            "--limit-request-field-size", str(FIELD_SIZE)]
    with running(args, workers=1) as server:
        yield server


def served_by(server) -> int:
    with Conn(server) as conn:
        answer = conn.get("/")
        assert answer.status == 200
        return json.loads(answer.body)["pid"]


def assert_worker_lives_on(server, worker: int) -> None:
    assert served_by(server) == worker
    assert server.workers() == [worker]


# The three requests uvicorn alone answers 200, then the rest of the WSGI worker's list.
@pytest.mark.parametrize("data, status", [
    (request_line(LINE + 1) + b"\r\nHost: t\r\n\r\n", 414),
    (head_with_fields(FIELDS + 1), 431),
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (head_with_fields(2, size=FIELD_SIZE + 1), 431),
    (request_line(LINE * 7) + b"\r\nHost: t\r\n" + b"X-A: 1\r\n" * 20, 414),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/9\r\nHost: t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nNo-Colon-Here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET hello HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
], ids=["line-too-long", "too-many-fields", "http-2.0", "field-too-large", "line-in-oversized-head",
        "garbage", "version", "no-colon", "space-in-name", "content-length-text",
        "content-length-conflict", "content-length-and-chunked", "no-host", "two-hosts", "bad-target",
        "connect", "gzip-chunked", "bad-chunk-size"])
def test_bad_request_gets_the_wsgi_workers_status_and_a_close(server, data, status):
    [worker] = server.workers()
    assert refused(server, data) == status
    assert_worker_lives_on(server, worker)


def test_heads_at_the_limits_are_served(server):
    for data in (request_line(LINE) + b"\r\nHost: t\r\n\r\n", head_with_fields(FIELDS, size=FIELD_SIZE)):
        with Conn(server) as conn:
            conn.send(data)
            assert conn.response().status == 200


def test_bad_request_after_a_good_one_on_the_same_connection(server):
    with Conn(server) as conn:
        assert conn.get("/").status == 200
        conn.send(b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.response().status == 400
        assert conn.closed_within(2.0)


# -- limit_request_body --------------------------------------------------------------------


@pytest.fixture(scope="module")
def body_limited(http):
    with running([HARDENING, "-w", "1", "--http", http, "--limit-request-body", str(BODY_LIMIT)],
                 workers=1) as server:
        yield server


def test_body_at_the_limit_is_read_whole(body_limited):
    assert_body_at_the_limit_is_read_whole(body_limited, BODY_LIMIT)


def test_content_length_over_the_limit_gets_413_before_the_app(body_limited, tmp_path):
    assert_content_length_over_the_limit_gets_413_before_the_app(body_limited, BODY_LIMIT, tmp_path / "marker")


def test_chunked_body_growing_over_the_limit_ends_the_request_and_gets_413(body_limited, tmp_path):
    marker = tmp_path / "marker"
    assert_chunked_body_over_the_limit_gets_413(body_limited, BODY_LIMIT, f"/read?marker={marker}")
    assert wait_for_line(marker, timeout=5)
    # The app read what was within the limit, never the chunk that went over.
    read = int(marker.read_text().split()[-1])
    assert read <= BODY_LIMIT and marker.read_text().startswith("http.disconnect after")


# -- header_map --------------------------------------------------------------------------


@pytest.mark.parametrize("mode, status, seen", [
    ("drop", 200, ["1.2.3.4"]),
    ("refuse", 400, None),
    ("dangerous", 200, ["1.2.3.4", "5.6.7.8"]),
])
def test_header_map_decides_what_happens_to_underscored_headers(http, mode, status, seen):
    """``X_Forwarded_For`` would merge into ``X-Forwarded-For`` where a framework turns
    names into environ keys (Django's ASGI handler does)."""
    with running([ECHO, "-w", "1", "--http", http, "--header-map", mode, "--no-proxy-headers"],
                 workers=1) as server, Conn(server) as conn:
        raw = conn.get("/", headers="X-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 5.6.7.8\r\n")
        assert raw.status == status
        if seen is None:
            assert raw.headers["connection"] == "close" and conn.closed_within(2.0)
            return
        headers = json.loads(raw.body)["headers"]
        assert [headers[name] for name in ("x-forwarded-for", "x_forwarded_for") if name in headers] == seen
