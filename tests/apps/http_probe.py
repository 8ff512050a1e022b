"""A WSGI app that records what it was handed, for the HTTP corpus and fuzz tests.

Every request is answered with a JSON description of what the app saw:
method, target, version, the header keys of the environ and the body
length.  The same record is kept in the worker; ``GET /__probe/seen``
returns (and forgets) the records of every request since the last call,
with the worker's pid, so a test can tell whether a refused request
reached the app and whether the worker is still the same process.

A record is ``complete`` only once the whole body has been read; a body
that ends early or is malformed makes ``wsgi.input`` raise, and the record
keeps the error and the bytes read before it.
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
