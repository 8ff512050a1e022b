"""The ASGI twin of tests.apps.hardening for the slow-client tests: the same routes
(``ignore``, ``sleep``, ``read``, ``endless``) and markers."""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import parse_qs

CHUNK = 65536


def _query(scope: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def _write(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text + "\n")


async def _plain(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)),
                            (b"x-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body; answers with the byte count.  A request that ends first
    (``http.disconnect``) is written to ``marker``."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _write(_query(scope).get("marker"), f"http.disconnect after {total}")
            return
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await _plain(send, f"{total}\n".encode())


async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """64 KiB chunks until the client is gone (as a streaming response that watches for
    ``http.disconnect`` stops); then writes to ``marker`` how many were produced."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.get_running_loop().create_task(watch())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    produced = 0
    try:
        while not gone.is_set():
            produced += 1
            await send({"type": "http.response.body", "body": b"e" * CHUNK, "more_body": True})
            await asyncio.sleep(0)
    finally:
        watcher.cancel()
        _write(_query(scope).get("marker"), f"closed after {produced} chunks")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    route = scope["path"].strip("/").partition("/")[0]
    if route == "read":
        await read(scope, receive, send)
    elif route == "endless":
        await endless(scope, receive, send)
    elif route == "sleep":
        await asyncio.sleep(float(_query(scope).get("s", "0.05")))
        await _plain(send, b"slept\n")
    else:
        await _plain(send, b"ignored\n")
