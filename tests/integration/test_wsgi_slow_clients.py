"""Slow, idle and greedy clients against the WSGI worker.

Clients that send their head a byte at a time, hold idle keep-alive
connections, trickle or stall their body, or stop reading the response must
not keep normal requests from being answered, nor hold an app thread for
longer than ``timeout``; ``worker_connections`` caps what one worker holds
(idle connections are shed at the cap to let a new one in);
and keep-alive clients must not starve a client that opens a new connection
per request. The measurements shared with the ASGI worker are in tests/slow_clients.py.
"""

from __future__ import annotations

import time

import pytest

from tests.harness import running
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

APP = "tests.apps.hardening:app"


# -- slow heads among idle keep-alive connections ------------------------------------------


def test_slow_heads_and_idle_connections_do_not_delay_normal_requests():
    raise_open_file_limit(OPEN_FILES_FOR_SLOW_AND_IDLE)
    args = [APP, "-w", "2", "--threads", "2", "--header-timeout", str(HEAD_TIMEOUT), "--keep-alive", "60"]
    with running(args, workers=2) as server:
        assert_slow_heads_and_idle_connections_do_not_delay_normal_requests(server)


def test_slow_head_is_dropped_at_the_head_timeout_counted_from_its_first_byte():
    with running([APP, "-w", "1", "--header-timeout", "2"], workers=1) as server:
        assert_slow_head_is_dropped_two_seconds_after_its_first_byte(server)


# -- worker_connections ------------------------------------------------------------------


def test_worker_connections_caps_open_connections_and_the_queue_holds_the_rest():
    """Ten connections in the middle of a head: none can be shed, the 11th waits."""
    cap = 10
    with running([APP, "-w", "1", "--worker-connections", str(cap)], workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                conn.send(b"GET /ignore HTTP/1.1\r\n")
            assert_next_connection_waits_until_one_closes(server, held)
        finally:
            for conn in held:
                conn.sock.close()


def test_at_worker_connections_the_longest_idle_connection_makes_room():
    """Ten idle keep-alive connections: an 11th client with a request is served, and the
    connection that had been quiet for the longest is the one closed for it."""
    cap = 10
    with running([APP, "-w", "1", "--worker-connections", str(cap), "--keep-alive", "30"],
                 workers=1) as server:
        held = [Conn(server) for _ in range(cap)]
        try:
            for conn in held:
                assert conn.get("/ignore").status == 200
                time.sleep(0.01)
            with Conn(server, timeout=3) as extra:
                assert extra.get("/ignore").status == 200
            assert held[0].closed_within(1.0)
            for conn in held[1:]:
                assert conn.get("/ignore").status == 200
        finally:
            for conn in held:
                conn.sock.close()


# -- body reads and response writes bounded by `timeout` -------------------------------------------


@pytest.fixture(scope="module")
def short_timeout():
    with running([APP, "-w", "1", "--threads", "1", "--timeout", "2"], workers=1) as server:
        yield server


def test_stalled_body_fails_the_read_after_timeout_and_frees_the_thread(short_timeout, tmp_path):
    marker = tmp_path / "marker"
    assert_stalled_body_gets_408_after_two_seconds(short_timeout, f"/read?marker={marker}&chunk=10")
    assert marker.read_text().startswith("HttpError: no request body bytes for 2s after 10")
    assert timed_get(short_timeout) < 1.0  # the one app thread is free again


def test_client_that_stops_reading_is_dropped_after_timeout(short_timeout, tmp_path):
    """Back-pressure: the app is not pulled while the client does not read; then the write times out."""
    assert_app_is_not_pulled_for_a_client_that_reads_nothing(short_timeout, tmp_path / "marker")


# -- fairness with one app thread ------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["shared", "reuseport", "round-robin"])
def test_new_connections_are_not_starved_by_keep_alive_clients(dispatch):
    """-w 1 --threads 1: two clients loop keep-alive requests, a third opens a connection per request."""
    with running([APP, "-w", "1", "--threads", "1", "--dispatch", dispatch], workers=1) as server:
        assert_new_connections_are_not_starved_by_keep_alive_clients(server)
