"""Small WSGI apps for lifecycle and configuration tests."""

import os
import time


def app(environ, start_response):
    body = f"hello from {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def note_started() -> None:
    """Appends a line to SLOW_STARTED_LOG, if set: a test waits for it instead of guessing."""
    path = os.environ.get("SLOW_STARTED_LOG")
    if path:
        with open(path, "a") as stream:
            stream.write(f"started {os.getpid()}\n")


def slow(environ, start_response):
    """Sleeps for ?seconds (default 1) before answering: an in-flight request."""
    query = environ.get("QUERY_STRING", "")
    seconds = float(query.split("=", 1)[1]) if query.startswith("seconds=") else 1.0
    note_started()
    time.sleep(seconds)
    body = f"slept {seconds}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def env(environ, start_response):
    """Answers with the value of the environment variable named by the path."""
    body = os.environ.get(environ["PATH_INFO"].strip("/"), "<unset>").encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def create_app(greeting="hi", punctuation="!"):
    """A factory: ``tests.apps.basic:create_app('hey', punctuation='?')``."""

    def greeter(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{greeting}{punctuation}".encode()]

    return greeter


application = app


async def asgi_app(scope, receive, send):
    """An ASGI app, to check the not-supported-yet message."""


def orphan_maker(environ, start_response):
    """Leaves a short-lived grandchild behind: its parent exits at once, so the
    grandchild is reparented to PID 1 (the arbiter, in a container)."""
    import subprocess

    subprocess.run(["sh", "-c", "sleep 0.3 & exit 0"], check=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"orphaned\n"]


_hoard = []


def hoard(environ, start_response):
    """Keeps 64 MiB more each call: memory that never comes back."""
    _hoard.append(bytearray(64 * 1024 * 1024))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hoarding {len(_hoard) * 64} MiB in {os.getpid()}\n".encode()]


def deaf_to_abort(environ, start_response):
    """Hangs with SIGABRT blocked on its thread, as a request stuck in C code that
    never returns to Python would: only SIGKILL ends it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    try:
        time.sleep(60)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGABRT})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"woke up\n"]


def channel_garbage(environ, start_response):
    """Sends the arbiter a malformed message over this worker's own channel, as a worker
    with a bug (or an app that scribbles on descriptors) would: ?case= names which."""
    import gc
    import json
    import socket
    import struct

    from clusterserve.workers.base import Worker

    (worker,) = [o for o in gc.get_objects() if isinstance(o, Worker)]
    channel = worker.channel
    case = environ.get("QUERY_STRING", "").partition("case=")[2]
    heartbeat = b"\x03"  # the kind byte of a heartbeat, whose fields are JSON
    # Round-robin reports (kind byte 0x11): room, ids taken, ids declined, closed; then the ids.
    report = struct.Struct("<BBHHQ")
    raw = {
        "not_json": heartbeat + b"{ not json",
        "huge_count": heartbeat + json.dumps({"requests": 10 ** 400, "accepted": 0, "open": 0, "in_flight": 0,
                                              "stats": None}).encode(),
        "unknown_kind": b"\x7f{}",
        "bad_decline": report.pack(0x11, 0, 0, 1, 0) + struct.pack("<Q", 0),
        "bad_report": report.pack(0x11, 7, 0, 0, 0),
        "short_report": report.pack(0x11, 0, 2, 0, 0) + struct.pack("<Q", 5),
        "unknown_id": report.pack(0x11, 0, 1, 0, 0) + struct.pack("<Q", 2 ** 40),
        # A handback (0x12) of one connection from family 99, and one without its descriptor.
        "bad_handback": struct.pack("<BxHHHII64s", 0x12, 1, 99, 0, 0, 0, b""),
        "handback_without_fd": struct.pack("<BxHHHII64s", 0x12, 1, int(socket.AF_INET), 80, 0, 0, b"127.0.0.1"),
    }
    if case in raw:
        channel.sock.send(raw[case])
    elif case == "fds":
        channel.send("ready", fds=[0], interface="wsgi")
    else:
        kind, fields = {
            "bad_reason": ("retire", {"reason": "nonsense", "detail": ""}),
            "bad_count": ("heartbeat", {"requests": "many", "accepted": 0, "open": 0, "in_flight": 0,
                                        "stats": None}),
            "bad_stats": ("heartbeat", {"requests": 1, "accepted": 1, "open": 0, "in_flight": 0,
                                        "stats": {"classes": "all of them"}}),
        }[case]
        channel.send(kind, **fields)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"sent {case} from {os.getpid()}\n".encode()]
