"""Twin WSGI and ASGI apps for the status and metrics tests.

``/status/CODE`` answers with that status; ``/sleep?seconds=S`` sleeps first
(an in-flight request); anything else answers 200.
"""

import asyncio
import time


def _plan(path: str, query: str) -> tuple[int, float]:
    code = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
    seconds = float(query.split("=", 1)[1]) if path == "/sleep" and query.startswith("seconds=") else 0.0
    return code, seconds


def wsgi(environ, start_response):
    code, seconds = _plan(environ["PATH_INFO"], environ["QUERY_STRING"])
    time.sleep(seconds)
    body = f"status {code}\n".encode()
    start_response(f"{code} Whatever", [("Content-Type", "text/plain"),
                                        ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    code, seconds = _plan(scope["path"], scope["query_string"].decode())
    await asyncio.sleep(seconds)
    body = f"status {code}\n".encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
