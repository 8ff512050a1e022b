"""Apps for the benchmarks.

``app`` answers ``hello from <pid>`` so a client can tell which worker
served it; ``?sleep=S`` makes it sleep S seconds first (a slow request).
"""

import os
import time


def app(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    if query.startswith("sleep="):
        time.sleep(float(query[len("sleep="):]))
    body = f"hello from {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
