"""Slow, idle and greedy clients against the ASGI worker, measured as the WSGI
worker's are (tests/slow_clients.py holds what both pass), with the same bounds.

Heads sent a byte at a time and hundreds of idle keep-alive connections must
not delay normal requests, and each slow head is dropped with a 408 at
``header_timeout``; a stalled body ends with a 408 after ``timeout``; a
client that stops reading is dropped after ``timeout``, and the app is not
pulled meanwhile; ``worker_connections`` caps what one worker holds; and
keep-alive clients do not starve one that opens a connection per request.
On both of uvicorn's protocols.
"""

from __future__ import annotations

import time

import pytest

from tests.harness import running, wait_for_line
from tests.integration.test_wsgi_http import Conn
from tests.slow_clients import (
    HEAD_TIMEOUT,
    OPEN_FILES_FOR_SLOW_AND_IDLE,
    assert_app_is_not_pulled_for_a_client_that_reads_nothing,
    assert_new_connections_are_not_starved_by_keep_alive_clients,
    assert_next_connection_waits_until_one_closes,
    assert_slow_head_is_dropped_two_seconds_after_its_first_byte,
    assert_slow_heads_and_idle_connections_do_not_delay_normal_requests,
    assert_stalled_body_gets_408_after_two_seconds,
    raise_open_file_limit,
    timed_get,
)

pytestmark = pytest.mark.http_path

APP = "tests.apps.asgi_hardening:app"


@pytest.fixture(scope="module", params=["h11", "httptools"])
def http(request):
    return request.param


def test_slow_heads_and_idle_connections_do_not_delay_normal_requests(http):
    raise_open_file_limit(OPEN_FILES_FOR_SLOW_AND_IDLE)
    args = [APP, "-w", "2", "--http", http, "--header-timeout", str(HEAD_TIMEOUT), "--keep-alive", "60"]
    with running(args, workers=2) as server:
        assert_slow_heads_and_idle_connections_do_not_delay_normal_requests(server)


def test_slow_head_is_dropped_at_the_head_timeout_counted_from_its_first_byte(http):
    with running([APP, "-w", "1", "--http", http, "--header-timeout", "2"], workers=1) as server:
        assert_slow_head_is_dropped_two_seconds_after_its_first_byte(server)


def test_silent_new_connection_is_closed_at_the_head_timeout(http):
    with running([APP, "-w", "1", "--http", http, "--header-timeout", "2"], workers=1) as server, \
            Conn(server) as conn:
        started = time.monotonic()
        assert conn.closed_within(4.0)
        assert conn.buffer == b""
        assert 1.8 < time.monotonic() - started < 3.5


def test_worker_connections_caps_open_connections_and_the_queue_holds_the_rest(http):
    cap = 10
    with running([APP, "-w", "1", "--http", http, "--worker-connections", str(cap), "--keep-alive", "30"],
                 workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                assert conn.get("/ignore").status == 200
            assert_next_connection_waits_until_one_closes(server, held)
        finally:
            for conn in held:
                conn.sock.close()


@pytest.fixture(scope="module")
def short_timeout(http):
    with running([APP, "-w", "1", "--http", http, "--timeout", "2"], workers=1) as server:
        yield server


def test_stalled_body_ends_the_request_after_timeout(short_timeout, tmp_path):
    marker = tmp_path / "marker"
    assert_stalled_body_gets_408_after_two_seconds(short_timeout, f"/read?marker={marker}")
    assert wait_for_line(marker, timeout=2)
    assert marker.read_text().startswith("http.disconnect after 10")
    assert timed_get(short_timeout) < 1.0


def test_trickled_body_is_read_whole(short_timeout):
    """Bytes that keep coming, each within timeout, are not a stall (the bound is per wait)."""
    with Conn(short_timeout) as conn:
        conn.send(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            time.sleep(1.2)
            conn.send(bytes([byte]))
        assert conn.response().body == b"4\n"


def test_client_that_stops_reading_is_dropped_after_timeout(short_timeout, tmp_path):
    """Back-pressure: the app is not pulled while the client does not read; then it is dropped."""
    seen_after = assert_app_is_not_pulled_for_a_client_that_reads_nothing(short_timeout, tmp_path / "marker")
    assert 1.8 < seen_after < 6.0


@pytest.mark.parametrize("dispatch", ["shared", "reuseport", "round-robin"])
def test_new_connections_are_not_starved_by_keep_alive_clients(dispatch, http):
    """-w 1: two clients loop keep-alive requests, a third opens a connection per request."""
    with running([APP, "-w", "1", "--http", http, "--dispatch", dispatch], workers=1) as server:
        assert_new_connections_are_not_starved_by_keep_alive_clients(server)
