"""WSGI apps that exercise the worker's PEP 3333 and HTTP behaviour.

Every response carries ``X-Pid`` (the worker's pid).  Options come from the
query string; ``marker=PATH`` names a file that ``close()`` of the response
iterable appends to, so a test can see that it was called.
"""

import hashlib
import io
import json
import os
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _headers(content_type="text/plain", length=None, extra=()):
    headers = [("Content-Type", content_type), ("X-Pid", str(os.getpid()))]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return headers + list(extra)


def _mark(path, text):
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text + "\n")


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, _headers("application/json", len(body)))
    return [body]


class Recorded:
    """An iterable with ``close()``: yields ``chunks`` every ``delay`` s, may fail at ``fail_at``."""

    def __init__(self, marker, chunks=3, delay=0.0, fail_at=-1):
        self.marker, self.chunks, self.delay, self.fail_at = marker, chunks, delay, fail_at

    def __iter__(self):
        for index in range(self.chunks):
            if index == self.fail_at:
                raise RuntimeError(f"failing at chunk {index}")
            if index and self.delay:
                time.sleep(self.delay)
            yield f"chunk {index}\n".encode()

    def close(self):
        _mark(self.marker, "closed")


# -- environ and request body -----------------------------------------------


def environ_dump(environ, start_response):
    """The environ as JSON: str values as they are, wsgi.* values described."""
    data = {key: value for key, value in environ.items() if isinstance(value, str)}
    data["wsgi.version"] = list(environ["wsgi.version"])
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        data[key] = environ.get(key)
    stream_api = {"wsgi.input": ("read", "readline", "readlines", "__iter__"),
                  "wsgi.errors": ("write", "writelines", "flush")}
    for key, methods in stream_api.items():
        data[key] = all(callable(getattr(environ[key], m, None)) for m in methods)
    data["wsgi.file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    data["key_types"] = sorted({type(k).__name__ for k in environ})
    return _json(start_response, data)


def body(environ, start_response):
    """Reads wsgi.input as ``how`` says; answers with what each read returned.

    how: read (read()), readn (read(n) until b""), readline (readline(n) until
    b""), iter (iterating), readlines; n: the size for readn/readline.
    """
    query = _query(environ)
    how, size = query.get("how", "read"), int(query.get("n", "-1"))
    stream = environ["wsgi.input"]
    if how == "read":
        pieces = [stream.read()]
    elif how == "readn":
        pieces = []
        while True:
            piece = stream.read(size)
            if not piece:
                break
            pieces.append(piece)
    elif how == "readline":
        pieces = []
        while True:
            piece = stream.readline(size)
            if not piece:
                break
            pieces.append(piece)
    elif how == "iter":
        pieces = list(stream)
    elif how == "readlines":
        pieces = stream.readlines()
    else:
        raise ValueError(how)
    data = b"".join(pieces)
    small = len(data) <= 4096
    return _json(start_response, {
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sizes": [len(p) for p in pieces],
        "pieces": [p.decode("latin-1") for p in pieces] if small else None,
        "after_end": stream.read(10).decode("latin-1"),
        "content_length": environ.get("CONTENT_LENGTH"),
    })


def first_line(environ, start_response):
    """Answers with the body's first line at once, leaving the rest unread."""
    line = environ["wsgi.input"].readline()
    start_response("200 OK", _headers(length=len(line)))
    return [line]


def echo(environ, start_response):
    """The request body back, with Content-Length."""
    data = environ["wsgi.input"].read()
    start_response("200 OK", _headers(length=len(data)))
    return [data]


def errors(environ, start_response):
    """Writes ``text`` to wsgi.errors with write, writelines and flush."""
    text = _query(environ).get("text", "wsgi-errors-text")
    stream = environ["wsgi.errors"]
    stream.write(f"{text} via write\n")
    stream.writelines([f"{text} via writelines 1\n", f"{text} via writelines 2\n"])
    stream.flush()
    return _json(start_response, {"ok": True})


# -- response shapes -----------------------------------------------------------


def hello(environ, start_response):
    data = b"hello\n"
    start_response("200 OK", _headers(length=len(data)))
    return [data]


def stream(environ, start_response):
    """``n`` chunks from a generator, no Content-Length (chunked on HTTP/1.1)."""
    count = int(_query(environ).get("n", "5"))
    start_response("200 OK", _headers())

    def chunks():
        for index in range(count):
            yield f"part {index}\n".encode()

    return chunks()


def status(environ, start_response):
    """Answers with status ``code`` and no body (204, 304) or a short one."""
    code = int(_query(environ).get("code", "200"))
    if code in (204, 304):
        start_response(f"{code} {'No Content' if code == 204 else 'Not Modified'}", [("X-Pid", str(os.getpid()))])
        return []
    return hello(environ, start_response)


def write_callable(environ, start_response):
    """Body partly through write(), partly as the returned iterable."""
    write = start_response("200 OK", _headers())
    write(b"written 1\n")
    write(b"written 2\n")
    return [b"returned 3\n"]


def lazy(environ, start_response):
    """A generator that calls start_response only when first iterated (PEP 3333 allows it)."""
    yield b""
    start_response("200 OK", _headers(extra=[("X-Lazy", "yes")]))
    yield b""
    yield b"lazy body\n"


def fail_before_start(environ, start_response):
    raise RuntimeError("failure-before-start_response")


def fail_after_start(environ, start_response):
    start_response("200 OK", _headers())
    raise RuntimeError("failure-after-start_response")


def fail_during_iteration(environ, start_response):
    """Sends one chunk, then the iterable raises; close() marks ``marker``."""
    start_response("200 OK", _headers())
    return Recorded(_query(environ).get("marker"), chunks=3, fail_at=1)


def closing(environ, start_response):
    """``chunks`` chunks ``delay`` s apart from an iterable whose close() marks ``marker``."""
    query = _query(environ)
    start_response("200 OK", _headers())
    return Recorded(query.get("marker"), chunks=int(query.get("chunks", "3")),
                    delay=float(query.get("delay", "0")))


def exc_info_before_headers(environ, start_response):
    """start_response again with exc_info before any body: the error response replaces it."""
    start_response("200 OK", _headers())
    try:
        raise ValueError("replaced")
    except ValueError:
        data = b"error page\n"
        start_response("503 Service Unavailable", _headers(length=len(data), extra=[("X-Replaced", "yes")]),
                       sys.exc_info())
    return [data]


def exc_info_after_headers(environ, start_response):
    """start_response with exc_info after the head went out: re-raises, connection aborted."""
    marker = _query(environ).get("marker")
    start_response("200 OK", _headers())

    def chunks():
        try:
            yield b"first chunk\n"
            try:
                raise ValueError("too late")
            except ValueError:
                start_response("500 Internal Server Error", _headers(), sys.exc_info())
                _mark(marker, "start_response did not raise")
            yield b"never\n"
        finally:
            _mark(marker, "closed")

    return chunks()


# -- wsgi.file_wrapper ------------------------------------------------------------


def file(environ, start_response):
    """The file at ``path`` through wsgi.file_wrapper; ``offset`` seeks first;
    ``buffer=1`` wraps an in-memory copy (no fileno, so no sendfile)."""
    query = _query(environ)
    handle = open(query["path"], "rb")
    if query.get("buffer"):
        with handle:
            handle = io.BytesIO(handle.read())
    handle.seek(int(query.get("offset", "0")))
    start_response("200 OK", _headers("application/octet-stream"))
    return environ["wsgi.file_wrapper"](handle, 8192)


# -- wsgiref.validate ---------------------------------------------------------------


def _plain(environ, start_response):
    method = environ["REQUEST_METHOD"]
    if method == "POST":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        out = b"got " + data
    else:
        out = f"{method} {environ['PATH_INFO']}\n".encode()
    write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    if method == "POST":
        write(out[:4])
        return [out[4:]]
    return [out]


validated = validator(_plain)


# -- one server for all of the above ---------------------------------------------------

ROUTES = {
    name: globals()[name]
    for name in (
        "environ_dump", "body", "first_line", "echo", "errors", "hello", "stream", "status",
        "write_callable", "lazy", "fail_before_start", "fail_after_start", "fail_during_iteration",
        "closing", "exc_info_before_headers", "exc_info_after_headers", "file", "validated",
    )
}


def app(environ, start_response):
    """Routes on the first path segment: ``/echo``, ``/stream/anything``, ..."""
    name = environ["PATH_INFO"].partition("/")[2].partition("/")[0] or "hello"
    route = ROUTES.get(name)
    if route is None:
        start_response("404 Not Found", _headers(length=0))
        return []
    return route(environ, start_response)
