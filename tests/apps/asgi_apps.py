"""ASGI apps for the ASGI worker's tests."""

import asyncio
import json
import os

from tests.apps.basic import note_started


async def hello(scope, receive, send):
    """Answers "hello from <pid>" (and accepts lifespan events)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"hello from {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def echo(scope, receive, send):
    """Echoes the request: method, path, root_path, client, headers, body, as JSON."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo: " + (message.get("text") or "")})
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    query = scope["query_string"].decode()
    if query.startswith("sleep="):
        await asyncio.sleep(float(query.split("=", 1)[1]))
    payload = json.dumps({
        "method": scope["method"], "path": scope["path"], "root_path": scope.get("root_path", ""),
        "client": list(scope["client"]) if scope.get("client") else None, "scheme": scope["scheme"],
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": body.decode(),
        "pid": os.getpid(), "state": dict(scope.get("state") or {}),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


class Lifespan:
    """Startup takes a moment and records itself; shutdown writes LIFESPAN_LOG."""

    def __init__(self, fail_startup=False, serve=None):
        self.fail_startup = fail_startup
        self.serve = serve  # the HTTP app (default: echo)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            if self.fail_startup:
                await send({"type": "lifespan.startup.failed", "message": "startup failed on purpose"})
                return
            await asyncio.sleep(0.3)
            scope["state"]["started_by"] = os.getpid()
            self._note(f"startup {os.getpid()}")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self._note(f"shutdown {os.getpid()}")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await (self.serve or echo)(scope, receive, send)

    @staticmethod
    def _note(line):
        path = os.environ.get("LIFESPAN_LOG")
        if path:
            with open(path, "a") as stream:
                stream.write(line + "\n")


with_lifespan = Lifespan()
failing_startup = Lifespan(fail_startup=True)


class Asgi2App:
    """An ASGI 2 (double-callable) app."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})


def create_app():
    """A factory returning an ASGI app (for --factory and module:create_app())."""
    return hello


async def slow(scope, receive, send):
    """The ASGI twin of tests.apps.basic:slow: sleeps ?seconds=S (default 1)."""
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    seconds = float(query.split("=", 1)[1]) if query.startswith("seconds=") else 1.0
    note_started()
    await asyncio.sleep(seconds)
    body = f"slept {seconds}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def stream(scope, receive, send):
    """Streams ?n=N parts without Content-Length (chunked on HTTP/1.1)."""
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    count = int(query.split("=", 1)[1]) if query.startswith("n=") else 5
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for index in range(count):
        await send({"type": "http.response.body", "body": f"part {index}\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


app = hello


slow_with_lifespan = Lifespan(serve=slow)


async def events(scope, receive, send):
    """Server-sent events, one every 0.2 s, for as long as the connection lasts."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    number = 0
    while True:
        await send({"type": "http.response.body", "body": f"data: {number}\n\n".encode(), "more_body": True})
        number += 1
        await asyncio.sleep(0.2)


async def long_lived(scope, receive, send):
    """echo, with /events answered by ``events``: HTTP, WebSockets and a stream in one app."""
    if scope["type"] == "http" and scope["path"] == "/events":
        await events(scope, receive, send)
    else:
        await echo(scope, receive, send)


async def ws_sink(scope, receive, send):
    """Accepts a WebSocket and never reads from it (until the connection ends)."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await asyncio.sleep(3600)
