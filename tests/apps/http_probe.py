"""A WSGI app (and its ASGI twin) that records what it was handed, for the HTTP
corpus and fuzz tests.

Every request is answered with a JSON description of what the app saw:
method, target, version, the header keys of the environ and the body
length.  The same record is kept in the worker; ``GET /__probe/seen``
returns (and forgets) the records of every request since the last call,
with the worker's pid, so a test can tell whether a refused request
reached the app and whether the worker is still the same process.

A record is ``complete`` only once the whole body has been read; a body
that ends early or is malformed makes ``wsgi.input`` raise (or the ASGI app
receive ``http.disconnect``), and the record keeps the error and the bytes
read before it.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

SEEN_PATH = "/__probe/seen"
_seen: list[dict[str, Any]] = []
_lock = threading.Lock()


def _json(start_response: Any, status: str, data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["RAW_URI"] == SEEN_PATH:
        with _lock:
            records = list(_seen)
            _seen.clear()
        return _json(start_response, "200 OK", {"pid": os.getpid(), "seen": records})
    record: dict[str, Any] = {
        "method": environ["REQUEST_METHOD"],
        "target": environ["RAW_URI"],
        "version": environ["SERVER_PROTOCOL"],
        "headers": {key: value for key, value in environ.items()
                    if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        "body_len": 0,
        "complete": False,
    }
    with _lock:
        _seen.append(record)
    stream = environ["wsgi.input"]
    try:
        while stream.read(1):  # byte by byte: the count is exact when the body breaks off
            record["body_len"] += 1
    except Exception as err:
        record["error"] = f"{type(err).__name__}: {err}"
        raise
    record["complete"] = True
    if record["method"] == "HEAD":  # no body goes out: say so, so that clients stay in step
        start_response("200 OK", [("Content-Length", "0")])
        return []
    return _json(start_response, "200 OK", record)


def _environ_key(name: bytes) -> str:
    key = name.decode("latin-1").upper()
    if key in ("CONTENT-TYPE", "CONTENT-LENGTH"):
        return key.replace("-", "_")
    return "HTTP_" + key.replace("-", "_")


async def _send_json(send: Any, data: object) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI twin of ``app``: the same records, the header names as the environ would
    have them (so that one expectation serves both), the target as ASGI gives it."""
    if scope["type"] != "http":
        return
    query = scope["query_string"]
    target = (scope["raw_path"] + (b"?" + query if query else b"")).decode("latin-1")
    if target == SEEN_PATH:
        with _lock:
            records = list(_seen)
            _seen.clear()
        await _send_json(send, {"pid": os.getpid(), "seen": records})
        return
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = _environ_key(name)
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    record: dict[str, Any] = {"method": scope["method"], "target": target,
                              "version": "HTTP/" + scope["http_version"], "headers": headers,
                              "body_len": 0, "complete": False}
    with _lock:
        _seen.append(record)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            record["error"] = "http.disconnect before the end of the body"
            return
        record["body_len"] += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    record["complete"] = True
    if record["method"] == "HEAD":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await _send_json(send, record)
