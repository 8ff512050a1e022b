"""The same small app for WSGI and ASGI, for the logging tests.

``/print`` prints to stdout and stderr (capture_output), ``/fail`` raises
(an error log line from the worker), anything else answers 201 with a body
of 5 bytes and an ``X-Out`` response header.
"""

import sys

HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Out", 'out "quoted"')]


def _side_effects(path):
    if path == "/print":
        print("printed to stdout by the app")
        print("printed to stderr by the app", file=sys.stderr)
    elif path == "/fail":
        raise RuntimeError("failing on purpose")


def wsgi(environ, start_response):
    _side_effects(environ["PATH_INFO"])
    start_response("201 Created", HEADERS)
    return [b"hello"]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    _side_effects(scope["path"])
    await send({"type": "http.response.start", "status": 201,
                "headers": [(k.lower().encode(), v.encode()) for k, v in HEADERS]})
    await send({"type": "http.response.body", "body": b"hello"})
