"""Bad input, gunicorn's limit_request_* limits, limit_request_body, header_map, slow
heads and the access log."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from tests.harness import request, running, wait_for_line
from tests.integration.test_wsgi_http import APP, Conn, pid_of
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

CUSTOM_FORMAT = "custom %(h)s %(r)s %(s)s %(b)s %({user-agent}i)s %({content-type}o)s %(D)s"


@pytest.fixture(scope="module")
def server(dispatch):
    args = [APP, "-w", "1", "--threads", "1", "--dispatch", dispatch,
            "--limit-request-line", str(LINE), "--limit-request-fields", str(FIELDS),
            "--limit-request-field-size", str(FIELD_SIZE),
            "--access-logfile", "-", "--access-logformat", CUSTOM_FORMAT]
    with running(args, workers=1) as server:
        yield server


def assert_worker_lives_on(server, worker: int) -> None:
    with Conn(server) as conn:
        assert pid_of(conn.get("/hello")) == worker
    assert server.workers() == [worker]


def test_one_thread_one_worker_environ_flags(server):
    status, _, body = request(server, "GET", "/environ_dump")
    assert status == 200, body
    env = json.loads(body)
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"]) == (False, False)


# -- malformed requests --------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /hello HTTP/9\r\nHost: t\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: t\r\nNo-Colon-Here\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n",  # smuggling
    b"GET /hello HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET hello HTTP/1.1\r\nHost: t\r\n\r\n",  # neither a path nor a URL
], ids=["request-line", "version", "no-colon", "space-in-name", "content-length-text",
        "content-length-negative", "content-length-conflict", "content-length-and-chunked",
        "no-host", "bad-target"])
def test_malformed_request_gets_400_and_a_close(server, data):
    [worker] = server.workers()
    assert refused(server, data) == 400
    assert_worker_lives_on(server, worker)


def test_malformed_chunked_body_gets_400(server):
    [worker] = server.workers()
    assert refused(server, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nhello\r\n0\r\n\r\n") == 400
    assert_worker_lives_on(server, worker)


def test_malformed_request_after_a_good_one_on_the_same_connection(server):
    with Conn(server) as conn:
        assert conn.get("/hello").status == 200
        conn.send(b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.response().status == 400
        assert conn.closed_within(2.0)


# -- limits ---------------------------------------------------------------------------------


def test_request_line_at_the_limit_is_served(server):
    with Conn(server) as conn:
        conn.send(request_line(LINE) + b"\r\nHost: t\r\n\r\n")
        assert conn.response().status == 404  # served: no such route


@pytest.mark.parametrize("length", [LINE + 1, 5000])
def test_longer_request_line_gets_414(server, length):
    [worker] = server.workers()
    assert refused(server, request_line(length) + b"\r\nHost: t\r\n\r\n") == 414
    assert_worker_lives_on(server, worker)


def test_long_request_line_in_an_oversized_incomplete_head_gets_414(server):
    """The whole head outgrows every limit before it ends: the line is still what is wrong."""
    head = request_line(LINE * 7) + b"\r\nHost: t\r\n" + b"X-A: 1\r\n" * 20
    assert refused(server, head) == 414


def test_fields_at_the_limits_are_served(server):
    with Conn(server) as conn:
        conn.send(head_with_fields(FIELDS, size=FIELD_SIZE))
        assert conn.response().status == 200


@pytest.mark.parametrize("data", [
    head_with_fields(FIELDS + 1),
    head_with_fields(200, size=FIELD_SIZE),
    head_with_fields(2, size=FIELD_SIZE + 1),
    head_with_fields(2, size=20_000),
], ids=["one-field-too-many", "far-too-many", "one-byte-too-large", "far-too-large"])
def test_too_many_or_too_large_fields_get_431(server, data):
    [worker] = server.workers()
    assert refused(server, data) == 431
    assert_worker_lives_on(server, worker)


# -- slow clients -----------------------------------------------------------------------------


def test_slow_head_does_not_block_another_client(server):
    """One worker, one app thread: a head trickling in over ~1 s holds neither."""
    head = b"GET /hello HTTP/1.1\r\nHost: slow.example\r\nX-Slow: yes\r\n\r\n"
    delay = 1.0 / len(head)
    sending = threading.Event()
    done_sending = threading.Event()
    slow_result: list[int] = []

    def slow_client() -> None:
        with Conn(server) as conn:
            sending.set()
            for byte in head:
                conn.send(bytes([byte]))
                time.sleep(delay)
            done_sending.set()
            slow_result.append(conn.response().status)

    thread = threading.Thread(target=slow_client, daemon=True)
    thread.start()
    try:
        assert sending.wait(5)
        time.sleep(0.2)
        for _ in range(3):
            with Conn(server) as conn:
                assert conn.get("/hello").status == 200
        assert not done_sending.is_set(), "the fast client was answered only after the slow one"
    finally:
        thread.join(10)
    assert slow_result == [200]


def test_stalled_head_gets_408_after_the_timeout():
    with running([APP, "-w", "1", "--header-timeout", "2"], workers=1) as server, Conn(server) as conn:
        started = time.monotonic()
        conn.send(b"GET /hello HTTP/1.1\r\nHost")
        raw = conn.response()
        assert raw.status == 408
        assert 1.8 < time.monotonic() - started < 5
        assert conn.closed_within(2.0)


# -- access log ---------------------------------------------------------------------------------


def test_custom_access_log_format(server):
    mark = len(server.log())
    status, _, _ = request(server, "POST", "/echo?x=1", body=b"four",
                           headers={"User-Agent": "agent/1.0"})
    assert status == 200
    line = server.wait_for_log(r"custom .*", after=mark).group(0)
    match = re.fullmatch(r"custom 127\.0\.0\.1 POST /echo\?x=1 HTTP/1\.1 200 4 agent/1\.0 text/plain (\d+)", line)
    assert match, line
    assert int(match.group(1)) < 5_000_000  # microseconds

    mark = len(server.log())
    request(server, "GET", "/status?code=204")
    line = server.wait_for_log(r"custom .*", after=mark).group(0)
    assert re.fullmatch(r"custom 127\.0\.0\.1 GET /status\?code=204 HTTP/1\.1 204 - - - \d+", line), line


def test_default_access_log_format():
    with running([APP, "-w", "1", "--access-logfile", "-"], workers=1) as server:
        request(server, "GET", "/hello?a=b", headers={"User-Agent": "agent/2.0", "Referer": "http://ref/"})
        line = server.wait_for_log(r"127\.0\.0\.1 .*").group(0)
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
        r'"GET /hello\?a=b HTTP/1\.1" 200 6 "http://ref/" "agent/2\.0"', line), line


# -- limit_request_body and header_map ------------------------------------------------------

HARDENING_APP = "tests.apps.hardening:app"
BODY_LIMIT = 1000


@pytest.fixture(scope="module")
def body_limited():
    with running([HARDENING_APP, "-w", "1", "--threads", "2",
                  "--limit-request-body", str(BODY_LIMIT)], workers=1) as server:
        yield server


def test_body_at_the_limit_is_read_whole(body_limited):
    assert_body_at_the_limit_is_read_whole(body_limited, BODY_LIMIT)


def test_content_length_over_the_limit_gets_413_before_the_app(body_limited, tmp_path):
    assert_content_length_over_the_limit_gets_413_before_the_app(body_limited, BODY_LIMIT, tmp_path / "marker")


def test_chunked_body_growing_over_the_limit_fails_the_read_and_gets_413(body_limited, tmp_path):
    marker = tmp_path / "marker"
    assert_chunked_body_over_the_limit_gets_413(body_limited, BODY_LIMIT, f"/read?marker={marker}&chunk=100")
    assert wait_for_line(marker, timeout=5)
    assert marker.read_text().startswith(f"HttpError: body larger than {BODY_LIMIT} bytes")


@pytest.mark.parametrize("mode, status, seen", [
    ("drop", 200, []),
    ("refuse", 400, None),
    ("dangerous", 200, ["HTTP_X_FORWARDED_FOR=1.2.3.4,5.6.7.8"]),
])
def test_header_map_decides_what_happens_to_underscored_headers(mode, status, seen):
    """``X_Forwarded_For`` would merge into ``HTTP_X_FORWARDED_FOR`` (gunicorn's header_map)."""
    with running([HARDENING_APP, "-w", "1", "--header-map", mode], workers=1) as server, \
            Conn(server) as conn:
        raw = conn.get("/environ_keys", headers="X-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 5.6.7.8\r\n")
        assert raw.status == status
        if seen is None:
            assert raw.headers["connection"] == "close" and conn.closed_within(2.0)
            return
        lines = raw.body.decode().splitlines()
        forwarded = [line for line in lines if line.startswith("HTTP_X_FORWARDED_FOR")]
        assert forwarded == (seen or ["HTTP_X_FORWARDED_FOR=1.2.3.4"])
        assert "wsgi.input_terminated=True" in lines
