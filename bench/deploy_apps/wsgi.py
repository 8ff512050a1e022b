"""WSGI app for bench/deploy.py: ``<version> <pid>`` (see __init__.py)."""

import os

from deploy_version import VERSION


def app(environ, start_response):
    body = f"{VERSION} {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
