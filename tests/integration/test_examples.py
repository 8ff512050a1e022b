"""The examples in examples/ serve what they say, in every dispatch mode."""

import json

from tests.harness import running


def test_hello_wsgi(dispatch):
    with running(["examples.hello:app", "-w", "2", "--dispatch", dispatch], workers=2) as server:
        assert server.get("/")[2] == b"Hello, world!\n"
        assert "serving WSGI" in server.log()


def test_hello_asgi(dispatch):
    with running(["examples.hello_asgi:app", "-w", "2", "--dispatch", dispatch], workers=2) as server:
        assert server.get("/")[2] == b"Hello, world!\n"
        assert "serving ASGI" in server.log()


def test_starlette_http_with_lifespan_state_and_websocket_echo(dispatch):
    from websockets.sync.client import connect

    with running(["examples.starlette_app:app", "-w", "2", "--dispatch", dispatch], workers=2) as server:
        status, _, body = server.get("/")
        data = json.loads(body)
        assert status == 200 and data["message"] == "Hello, world!"
        assert data["worker"] in server.workers()
        with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=5, close_timeout=2) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "echo: ping"
