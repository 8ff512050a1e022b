"""An app with faults on request, as WSGI (``wsgi``) and ASGI (``asgi``), for fault injection.

- ``/``: its worker's pid;  ``/slow?seconds=S``: the same after S seconds;
- ``/note``: the same, after a line to ``wsgi.errors`` (WSGI; ASGI has no such stream);
- ``/exit``: the worker process exits at once (``os._exit``), unanswered; first it appends
  its pid and the client ports of the connections it holds to ``FAULTY_EXIT_REPORT``;
- ``/hang``: blocks its thread (the event loop, for ASGI) for a minute;
- ``/leak``: keeps 64 MiB more for the life of the worker;
- ``/large?mb=N``: N MiB (default 8) of ``x``, in 64 KiB chunks, for clients that read slowly.

If the file named by ``FAULTY_BROKEN_MARKER`` exists, importing this module fails: a
``SIGHUP`` then loads an app that raises at import.
"""

import os
import time

if os.path.exists(os.environ.get("FAULTY_BROKEN_MARKER", "/nonexistent")):
    raise RuntimeError("this app is broken on purpose (FAULTY_BROKEN_MARKER exists)")

_hoard = []
CHUNK = 64 * 1024


def _act(path, query):
    """Do the fault ``path`` names; the body to answer with."""
    if path == "/slow":
        time.sleep(float(query.partition("seconds=")[2] or 0.2))
    elif path == "/exit":
        _report_connections()
        os._exit(0)
    elif path == "/hang":
        time.sleep(60)
    elif path == "/leak":
        _hoard.append(bytearray(64 * 1024 * 1024))
    return f"{path} from {os.getpid()}\n".encode()


def _report_connections():
    """Append "PID PORT PORT ..." (the peers' ports of this process's TCP connections) to
    the report file: the requests this exit cuts off.  Nothing else runs meanwhile: the
    thread that accepts is the one running this request."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as stream:
            for line in stream.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" and fields[9] in inodes:  # not a listening socket
                    ports.append(int(fields[2].rsplit(":", 1)[1], 16))
    with open(os.environ["FAULTY_EXIT_REPORT"], "a") as report:
        report.write(" ".join(map(str, [os.getpid(), *ports])) + "\n")


def _large_size(query):
    return int(float(query.partition("mb=")[2] or 8) * 1024 * 1024)


def _chunks(size):
    for start in range(0, size, CHUNK):
        yield b"x" * min(CHUNK, size - start)


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/note":
        environ["wsgi.errors"].write(f"a note from the app in {os.getpid()}\n")
    if environ["PATH_INFO"] == "/large":
        size = _large_size(environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return _chunks(size)
    body = _act(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/large":
        size = _large_size(scope["query_string"].decode())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size).encode())]})
        for chunk in _chunks(size):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/slow":
        import asyncio

        await asyncio.sleep(float(scope["query_string"].decode().partition("seconds=")[2] or 0.2))
        body = f"/slow from {os.getpid()}\n".encode()
    else:
        body = _act(scope["path"], scope["query_string"].decode())  # /hang blocks the loop
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
