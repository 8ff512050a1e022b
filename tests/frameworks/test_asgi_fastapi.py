"""A FastAPI app in the layout of FastAPI's "Bigger Applications" guide
(tests/frameworks/asgi_apps/fastapi_project), driven through its users' flows:
validated JSON bodies, a cookie login, a streamed response, a WebSocket,
background tasks, and lifespan startup and shutdown across a reload, with a
WebSocket open."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from tests.frameworks.asgi_matrix import (
    APPS,
    TEST_TIMEOUT,
    Served,
    server_fixture,
    server_log_stays_clean,  # noqa: F401 (autouse)
    wait_for,
    wait_for_file,
)

pytest.importorskip("fastapi", reason="fastapi comes with the test extra")
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

server = server_fixture("app.main:app", cwd=APPS / "fastapi_project")
TOKEN = {"X-Token": "fake-super-secret-token"}


def test_asgi_fastapi_json_bodies_are_validated(server: Served) -> None:
    with server.client() as client:
        created = client.post("/items/", headers=TOKEN,
                              json={"name": "hammer", "price": 10.0, "tags": ["tools"]})
        assert created.status_code == 200
        assert created.json() == {"name": "hammer", "price_with_tax": 12.0, "tags": ["tools"]}

        missing = client.post("/items/", headers=TOKEN, json={"name": "hammer"})
        assert missing.status_code == 422
        assert [(e["type"], e["loc"]) for e in missing.json()["detail"]] == \
            [("missing", ["body", "price"])]
        negative = client.post("/items/", headers=TOKEN, json={"name": "hammer", "price": -1})
        assert negative.status_code == 422
        assert negative.json()["detail"][0]["type"] == "greater_than"
        broken = client.post("/items/", headers={**TOKEN, "Content-Type": "application/json"},
                             content=b'{"name": "hammer", "price": ')
        assert broken.status_code == 422
        assert broken.json()["detail"][0]["type"] == "json_invalid"

        assert client.post("/items/", json={"name": "x", "price": 1}).status_code == 422
        wrong = client.post("/items/", headers={"X-Token": "guess"}, json={"name": "x", "price": 1})
        assert (wrong.status_code, wrong.json()) == (400, {"detail": "X-Token header invalid"})


def test_asgi_fastapi_cookie_login_and_logout(server: Served) -> None:
    with server.client(keep_alive=False) as client:
        assert client.get("/users/me").status_code == 401
        refused = client.post("/users/login", json={"username": "ada", "password": "nope"})
        assert refused.status_code == 401 and "user" not in client.cookies
        assert client.post("/users/login",
                           json={"username": "ada", "password": "ada-password"}).status_code == 200
        assert client.cookies["user"] == "ada"
        assert client.get("/users/me").json() == {"username": "ada"}
        assert client.post("/users/logout").status_code == 200
        assert "user" not in client.cookies
        assert client.get("/users/me").status_code == 401


def test_asgi_fastapi_streaming_response_is_sent_as_the_app_yields(server: Served) -> None:
    with server.client() as client:
        headers, lines = server.read_held_stream(client, "/live/stream")
        assert lines == ["line 0", "line 1", "line 2", "line 3"]
        assert headers["content-type"].startswith("text/plain")
        assert headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in headers
        # The connection is reused after a streamed response.
        assert client.get("/").status_code == 200


def test_asgi_fastapi_websocket_with_the_session_cookie(server: Served) -> None:
    with server.client() as client:
        client.post("/users/login", json={"username": "grace", "password": "grace-password"})
        cookie = f"user={client.cookies['user']}"
    with connect(server.ws_url("/live/ws"), additional_headers={"Cookie": cookie},
                 open_timeout=10, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "grace"}
        for text in ("ping", "über", "x" * 70_000):
            ws.send(text)
            assert ws.recv(timeout=10) == text.upper()
        ws.send("bye")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye grace")


def test_asgi_fastapi_background_tasks_run_after_the_response(server: Served) -> None:
    item = uuid.uuid4().int % 1_000_000
    with server.client() as client:
        response = client.post(f"/items/{item}/notify", headers=TOKEN, json={"message": "shipped"})
        assert (response.status_code, response.json()) == (202, {"queued": True})
    assert wait_for_file(server.records / f"receipt-{item}").startswith("shipped (pid ")
    assert wait_for_file(server.records / f"audit-{item}") == "notified"


def test_asgi_fastapi_lifespan_and_an_open_websocket_across_a_reload(server: Served) -> None:
    old = set(server.process.workers())
    assert len(old) == 2
    for pid in old:
        wait_for_file(server.records / f"startup-{pid}")
    with server.client(keep_alive=False) as client, \
            connect(server.ws_url("/live/ws"), open_timeout=10, close_timeout=5) as ws:
        seen = client.get("/").json()
        assert seen["started_by"] == seen["pid"] and seen["pid"] in old
        assert json.loads(ws.recv(timeout=10)) == {"hello": "anonymous"}

        # HUP: each server replaces its workers; the old ones close their WebSockets
        # with 1012 (service restart) and run lifespan shutdown.
        server.process.send(signal.SIGHUP)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=60)
        assert closed.value.rcvd.code == 1012
        for pid in old:
            wait_for_file(server.records / f"shutdown-{pid}", timeout=60)
        server.wait_ready(4)
        wait_for(lambda: len(workers := set(server.process.workers())) == 2 and not workers & old,
                 "two new workers in place of the old ones")
        new = set(server.process.workers())
        for pid in new:
            wait_for_file(server.records / f"startup-{pid}")
        seen = client.get("/").json()
        assert seen["started_by"] == seen["pid"] and seen["pid"] in new
    # The client reconnects, to a new worker.
    with connect(server.ws_url("/live/ws"), open_timeout=10, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "anonymous"}
