"""Records the pid of every process that imports it (to see where preload imports)."""

import os

with open(os.environ["IMPORT_MARKER"], "a") as _marker:
    _marker.write(f"{os.getpid()}\n")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"preloaded\n"]
