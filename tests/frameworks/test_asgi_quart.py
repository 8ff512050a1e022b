"""A Quart app (tests/frameworks/asgi_apps/quart_app.py) driven as its users drive it:
a login form with a signed-cookie session and flashed messages, a file upload,
a streamed response, a WebSocket that knows the session, and serving hooks."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.frameworks.asgi_matrix import (
    TEST_TIMEOUT,
    Served,
    server_fixture,
    server_log_stays_clean,  # noqa: F401 (autouse)
    wait_for_file,
)

pytest.importorskip("quart", reason="quart comes with the test extra")
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

server = server_fixture("tests.frameworks.asgi_apps.quart_app:app")


def test_asgi_quart_serving_hooks_ran_in_every_worker(server: Served) -> None:
    for pid in server.process.workers():
        wait_for_file(server.records / f"startup-{pid}")


def test_asgi_quart_login_session_flash_upload_logout(server: Served) -> None:
    document = os.urandom(1_500_000)
    with server.client(keep_alive=False) as client:
        assert client.post("/upload", files={"document": ("a.bin", document)}).status_code == 401
        wrong = client.post("/login", data={"username": "ada", "password": "babbage"},
                            follow_redirects=True)
        assert wrong.status_code == 200
        assert "Wrong username or password." in wrong.text and "Signed in" not in wrong.text

        signed_in = client.post("/login", data={"username": "ada", "password": "lovelace"})
        assert signed_in.status_code == 302 and signed_in.headers["location"] == "/"
        assert "session" in client.cookies
        page = client.get("/")
        assert "Welcome, ada!" in page.text and "Signed in as ada" in page.text
        assert "Welcome" not in client.get("/").text  # a flashed message shows once

        uploaded = client.post("/upload", files={"document": ("report.bin", document,
                                                              "application/octet-stream")})
        assert uploaded.status_code == 200
        assert uploaded.json() == {"filename": "report.bin", "size": len(document),
                                   "sha256": hashlib.sha256(document).hexdigest(), "user": "ada"}

        signed_out = client.post("/logout", follow_redirects=True)
        assert "Signed out." in signed_out.text and "Signed in" not in signed_out.text


def test_asgi_quart_streamed_response(server: Served) -> None:
    with server.client() as client:
        headers, lines = server.read_held_stream(client, "/stream")
        assert lines == ["part 0", "part 1", "part 2", "part 3"]
        assert headers["content-type"].startswith("text/plain")
        assert client.get("/").status_code == 200


def test_asgi_quart_websocket_with_the_session(server: Served) -> None:
    with server.client() as client:
        client.post("/login", data={"username": "ada", "password": "lovelace"})
        cookie = f"session={client.cookies['session']}"
    with connect(server.ws_url("/ws"), additional_headers={"Cookie": cookie},
                 open_timeout=10, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "ada"}
        for text in ("stressed", "x" * 70_000 + "y"):
            ws.send(text)
            assert ws.recv(timeout=10) == text[::-1]
        ws.send("bye")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "bye ada")
