"""A Litestar app (tests/frameworks/asgi_apps/litestar_app.py) driven as its users
drive it: validated bodies, a cookie login, background tasks, a streamed response,
a WebSocket listener, and lifespan hooks across a reload."""

from __future__ import annotations

import signal
import uuid

import pytest

from tests.frameworks.asgi_matrix import (
    TEST_TIMEOUT,
    Served,
    server_fixture,
    server_log_stays_clean,  # noqa: F401 (autouse)
    wait_for,
    wait_for_file,
)

pytest.importorskip("litestar", reason="litestar comes with the test extra")
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

server = server_fixture("tests.frameworks.asgi_apps.litestar_app:app")


def test_asgi_litestar_bodies_are_validated(server: Served) -> None:
    with server.client() as client:
        created = client.post("/books", json={"title": "Dune", "pages": 412})
        assert (created.status_code, created.json()) == \
            (201, {"title": "Dune", "pages": 412, "sheets": 206})
        for bad in ({"title": "Dune"}, {"title": "Dune", "pages": 0}, {"title": "", "pages": 1}):
            refused = client.post("/books", json=bad)
            assert refused.status_code == 400, bad
            assert refused.json()["detail"] == "Validation failed for POST /books"
        broken = client.post("/books", content=b'{"title": ', headers={"Content-Type": "application/json"})
        assert broken.status_code == 400


def test_asgi_litestar_cookie_login_and_logout(server: Served) -> None:
    with server.client(keep_alive=False) as client:
        assert client.get("/me").status_code == 401
        assert client.post("/login", json={"username": "lin", "password": "x"}).status_code == 401
        assert client.post("/login", json={"username": "lin", "password": "lin-password"}).status_code == 201
        assert client.get("/me").json() == {"username": "lin"}
        assert client.post("/logout").status_code == 201
        assert "user" not in client.cookies
        assert client.get("/me").status_code == 401


def test_asgi_litestar_background_task_runs_after_the_response(server: Served) -> None:
    book = uuid.uuid4().int % 1_000_000
    with server.client() as client:
        response = client.post(f"/books/{book}/notify")
        assert (response.status_code, response.json()) == (202, {"queued": True})
    assert wait_for_file(server.records / f"receipt-{book}").startswith("pid ")


def test_asgi_litestar_streamed_response(server: Served) -> None:
    with server.client() as client:
        headers, lines = server.read_held_stream(client, "/stream")
        assert lines == ["line 0", "line 1", "line 2", "line 3"]
        assert headers.get("transfer-encoding") == "chunked"


def test_asgi_litestar_websocket_listener(server: Served) -> None:
    with connect(server.ws_url("/ws"), open_timeout=10, close_timeout=5) as ws:
        for text in ("hello", "ünïcode", "z" * 70_000):
            ws.send(text)
            assert ws.recv(timeout=10) == text.upper()


def test_asgi_litestar_lifespan_hooks_across_a_reload(server: Served) -> None:
    old = set(server.process.workers())
    for pid in old:
        wait_for_file(server.records / f"startup-{pid}")
    server.process.send(signal.SIGHUP)
    for pid in old:
        wait_for_file(server.records / f"shutdown-{pid}", timeout=60)
    server.wait_ready(4)
    wait_for(lambda: len(workers := set(server.process.workers())) == 2 and not workers & old,
             "two new workers in place of the old ones")
    for pid in server.process.workers():
        wait_for_file(server.records / f"startup-{pid}")
    with server.client() as client:
        assert client.post("/books", json={"title": "After", "pages": 1}).status_code == 201
