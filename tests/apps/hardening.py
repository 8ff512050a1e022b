"""A WSGI app for the hardening tests: limits, slow clients, bodies and headers.

Routes by the first path segment; options come from the query string.
Every response carries ``X-Pid``.  ``marker=PATH`` names a file the app
writes to, so a test can see what happened inside the worker.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

CHUNK = 65536


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _plain(start_response: Any, body: bytes, status: str = "200 OK",
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            ("X-Pid", str(os.getpid())), *(extra or [])])
    return [body]


def _write(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text + "\n")


def read(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Reads wsgi.input in ``chunk``-byte reads (after ``delay`` s); answers with the byte count.

    A failing read is written to ``marker`` (the error the app saw), then re-raised.
    """
    query = _query(environ)
    size = int(query.get("chunk", str(CHUNK)))
    time.sleep(float(query.get("delay", "0")))
    stream, total = environ["wsgi.input"], 0
    try:
        while data := stream.read(size):
            total += len(data)
    except Exception as err:
        _write(query.get("marker"), f"{type(err).__name__}: {err} after {total}")
        raise
    return _plain(start_response, f"{total}\n".encode())


def ignore(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers without reading the body."""
    return _plain(start_response, b"ignored\n")


def sleep(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Holds its app thread for ``s`` seconds."""
    time.sleep(float(_query(environ).get("s", "0.05")))
    return _plain(start_response, b"slept\n")


def headers(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the response headers ``case`` names."""
    cases = {
        "hop": [("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"), ("Transfer-Encoding", "gzip"),
                ("Upgrade", "h2c"), ("Proxy-Authenticate", "Basic"), ("TE", "trailers"),
                ("Trailer", "X-T"), ("X-Kept", "yes")],
        "close": [("Connection", "close")],
        "crlf-value": [("X-Split", "a\r\nSet-Cookie: evil=1")],
        "lf-value": [("X-Split", "a\nb")],
        "crlf-name": [("X-Split\r\nSet-Cookie", "evil=1")],
        "space-name": [("X Split", "a")],
        "server": [("Server", "mine"), ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")],
        "length-twice": [("Content-Length", "99")],
        "none": [],
    }
    case = _query(environ).get("case", "none")
    if case == "crlf-status":
        return _plain(start_response, b"headers\n", "200 OK\r\nSet-Cookie: evil=1")
    return _plain(start_response, b"headers\n", extra=cases[case])


def bodiless(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Status ``code`` (204, 304) with a body the server must not send."""
    code = _query(environ).get("code", "304")
    return _plain(start_response, b"not to be sent", f"{code} No Body")


def length(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Declares Content-Length ``declared`` and sends ``sent`` bytes, in two chunks."""
    query = _query(environ)
    declared, sent = int(query["declared"]), int(query["sent"])
    start_response("200 OK", [("Content-Length", str(declared)), ("X-Pid", str(os.getpid()))])
    body = b"x" * sent
    return [body[:sent // 2], body[sent // 2:]]


def stream_wait(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """Yields a first chunk, then waits (up to 10 s) for ``marker`` to exist before the second."""
    marker = _query(environ)["marker"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))])
    yield b"first\n"
    deadline = time.monotonic() + 10
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"second\n" if os.path.exists(marker) else b"gave up waiting\n"


class Endless:
    """64 KiB chunks until the client is gone; ``close()`` writes how many were produced."""

    def __init__(self, marker: str | None) -> None:
        self.marker = marker
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"e" * CHUNK
        while True:
            self.produced += 1
            yield block

    def close(self) -> None:
        _write(self.marker, f"closed after {self.produced} chunks")


def endless(environ: dict[str, Any], start_response: Any) -> Endless:
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Pid", str(os.getpid()))])
    return Endless(_query(environ).get("marker"))


PATTERN = bytes(range(256)) * (CHUNK // 256)  # 64 KiB that show misplaced or lost bytes


def big(environ: dict[str, Any], start_response: Any) -> Any:
    """``size`` bytes of PATTERN, sized: as 64 KiB chunks from a generator (``kind=chunks``),
    as one chunk (``single``), or the file ``path`` through ``wsgi.file_wrapper`` (``file``)."""
    query = _query(environ)
    size, kind = int(query.get("size", str(CHUNK))), query.get("kind", "chunks")
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)),
                              ("X-Pid", str(os.getpid()))])
    if kind == "file":
        return environ["wsgi.file_wrapper"](open(query["path"], "rb"))  # closed by the server
    if kind == "single":
        return [(PATTERN * (size // CHUNK + 1))[:size]]
    return (PATTERN[:min(CHUNK, size - sent)] for sent in range(0, size, CHUNK))


_hoarded: list[int] = []


def _hoard() -> None:
    try:
        while True:
            _hoarded.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass


def _keep_hoarding() -> None:
    while True:
        _hoard()
        time.sleep(0.005)


def hoard_descriptors(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """From now on a thread takes every descriptor the worker has left, as soon as one
    is free: the worker cannot accept connections any more."""
    _hoard()
    threading.Thread(target=_keep_hoarding, daemon=True).start()
    return _plain(start_response, f"holding {len(_hoarded)} descriptors\n".encode())


def environ_keys(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The environ's HTTP_* keys and values, one per line, and wsgi.input_terminated."""
    lines = [f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith("HTTP_")]
    lines.append(f"wsgi.input_terminated={environ.get('wsgi.input_terminated')}")
    return _plain(start_response, ("\n".join(lines) + "\n").encode("latin-1"))


ROUTES = {name: globals()[name] for name in (
    "read", "ignore", "sleep", "headers", "bodiless", "length", "stream_wait", "endless", "big", "hoard_descriptors",
    "environ_keys")}


def app(environ: dict[str, Any], start_response: Any) -> Any:
    route = ROUTES.get(environ["PATH_INFO"].strip("/").partition("/")[0])
    if route is None:
        return _plain(start_response, b"not found\n", "404 Not Found")
    return route(environ, start_response)
