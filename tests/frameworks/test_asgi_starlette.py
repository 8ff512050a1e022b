"""Server-sent events from a Starlette app with sse-starlette
(tests/frameworks/asgi_apps/starlette_sse.py), read as a browser's EventSource
reads them: events as they are sent, resuming from ``Last-Event-ID``, a client
that goes away, and a stream that is open while the server reloads."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.frameworks.asgi_matrix import (
    TEST_TIMEOUT,
    Served,
    server_fixture,
    server_log_stays_clean,  # noqa: F401 (autouse)
    wait_for,
    wait_for_file,
)

pytest.importorskip("sse_starlette", reason="sse-starlette comes with the test extra")

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

server = server_fixture("tests.frameworks.asgi_apps.starlette_sse:app")


@dataclass
class Event:
    event: str
    id: str
    data: dict[str, int]


def read_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream as EventSource does (comments, such as pings, are skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield Event(fields.get("event", "message"), fields.get("id", ""),
                            json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def new_stream() -> str:
    return uuid.uuid4().hex


def test_asgi_starlette_sse_events_arrive_as_they_are_sent(server: Served) -> None:
    stream, release = new_stream(), new_stream()
    with server.client() as client:
        with client.stream("GET", "/events", params={"stream": stream, "count": 4, "release": release},
                           headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers.get("transfer-encoding") == "chunked"
            events = read_events(response)
            first = next(events)
            assert (first.event, first.id, first.data["n"]) == ("tick", "0", 0)
            # The app holds the next event until the client has seen the first.
            (server.records / release).touch()
            rest = list(events)
        assert [e.id for e in rest] == ["1", "2", "3"]
        assert {e.data["pid"] for e in rest} == {first.data["pid"]}
        assert wait_for_file(server.records / f"closed-{stream}").endswith(" after 4")
        assert client.get("/health").status_code == 200  # the connection is kept after the stream


def test_asgi_starlette_sse_resumes_after_last_event_id(server: Served) -> None:
    with server.client() as client:
        with client.stream("GET", "/events", params={"stream": new_stream(), "count": 3},
                           headers={"Last-Event-ID": "41"}) as response:
            assert [e.id for e in read_events(response)] == ["42", "43", "44"]


def test_asgi_starlette_sse_stream_ends_when_the_client_goes_away(server: Served) -> None:
    stream = new_stream()
    with server.client() as client:
        with client.stream("GET", "/events", params={"stream": stream}) as response:
            events = read_events(response)
            assert [next(events).id for _ in range(3)] == ["0", "1", "2"]
    # The server saw the disconnect and the app's generator was closed.
    pid, _, sent = wait_for_file(server.records / f"closed-{stream}", timeout=10).split()
    assert int(pid) in server.process.workers() and int(sent) >= 3


def test_asgi_starlette_sse_reconnects_to_a_new_worker_across_a_reload(server: Served) -> None:
    stream = new_stream()
    old = set(server.process.workers())
    with server.client() as client:
        with client.stream("GET", "/events", params={"stream": stream}) as response:
            events = read_events(response)
            seen = [next(events) for _ in range(2)]
            server.process.send(signal.SIGHUP)
            # The old worker ends the stream on its way out, as EventSource expects.
            seen += list(events)
        assert seen[0].data["pid"] in old
        assert wait_for_file(server.records / f"closed-{stream}", timeout=10)
        server.wait_ready(4)
        wait_for(lambda: len(workers := set(server.process.workers())) == 2 and not workers & old,
                 "two new workers in place of the old ones")
        new = set(server.process.workers())
        # EventSource reconnects with the last id it saw, to a new worker.
        with client.stream("GET", "/events", params={"stream": new_stream(), "count": 2},
                           headers={"Last-Event-ID": seen[-1].id}) as response:
            resumed = list(read_events(response))
        assert [int(e.id) for e in resumed] == [int(seen[-1].id) + 1, int(seen[-1].id) + 2]
        assert {e.data["pid"] for e in resumed} <= new
