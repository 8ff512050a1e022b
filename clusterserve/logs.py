"""Error log and access log.

The error log is the ``clusterserve`` logger: lines look like gunicorn's,
``[time] [pid] [LEVEL] message``.  The access log formats gunicorn's atoms
(``%(h)s``, ``%(r)s``, ``%({header}i)s``, ...) from one finished request.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger("clusterserve")
access_log = logging.getLogger("clusterserve.access")
# The ASGI worker runs uvicorn's code, which logs its errors (a failing
# lifespan startup, an exception in the app) here: same handler as ours.
uvicorn_log = logging.getLogger("uvicorn")

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def _handler(path: str, default_stream: TextIO) -> logging.Handler:
    if path == "-":
        return logging.StreamHandler(default_stream)
    return logging.FileHandler(path, encoding="utf-8")


def configure(loglevel: str, errorlog: str, accesslog: str | None) -> None:
    """Set up the error and access loggers from the settings."""
    for logger in (log, access_log, uvicorn_log):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    error_handler = _handler(errorlog, sys.stderr)
    error_handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    for logger in (log, uvicorn_log):
        logger.addHandler(error_handler)
        logger.setLevel(loglevel.upper())
        logger.propagate = False

    access_log.propagate = False
    if accesslog is None:
        access_log.disabled = True
        return
    access_log.disabled = False
    access_handler = _handler(accesslog, sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(access_handler)
    access_log.setLevel(logging.INFO)


@dataclass
class RequestRecord:
    """What the access log needs to know about one finished request."""

    environ: Mapping[str, Any]
    status: str
    response_headers: list[tuple[str, str]]
    body_bytes: int
    started: float  # time.time() when the request head was complete
    duration: float  # seconds
    pid: int


class _Atoms(dict):
    """Gunicorn's atoms; ``{name}i``/``{name}o``/``{name}e`` are looked up on demand."""

    def __init__(self, record: RequestRecord) -> None:
        env = record.environ
        status_code = record.status.split(None, 1)[0]
        query = env.get("QUERY_STRING", "")
        path = env.get("RAW_URI") or env.get("PATH_INFO", "")
        request_line = f"{env.get('REQUEST_METHOD', '-')} {path} {env.get('SERVER_PROTOCOL', '-')}"
        super().__init__(
            h=env.get("REMOTE_ADDR", "-"),
            l="-",
            u=_remote_user(env),
            t=time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(record.started)),
            r=request_line,
            m=env.get("REQUEST_METHOD", "-"),
            U=env.get("PATH_INFO", ""),
            q=query,
            H=env.get("SERVER_PROTOCOL", "-"),
            s=status_code,
            B=record.body_bytes,
            b=str(record.body_bytes) if record.body_bytes else "-",
            f=env.get("HTTP_REFERER", "-"),
            a=env.get("HTTP_USER_AGENT", "-"),
            T=int(record.duration),
            M=int(record.duration * 1000),
            D=int(record.duration * 1_000_000),
            L=f"{record.duration:.6f}",
            p=f"<{record.pid}>",
        )
        self._env = env
        self._out = {k.lower(): v for k, v in record.response_headers}

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and "}" in key:
            name, _, kind = key[1:].rpartition("}")
            if kind == "i":
                return self._env.get("HTTP_" + name.upper().replace("-", "_"), "-")
            if kind == "o":
                return self._out.get(name.lower(), "-")
            if kind == "e":
                return str(self._env.get(name, "-"))
        return "-"


def _remote_user(env: Mapping[str, Any]) -> str:
    auth = env.get("HTTP_AUTHORIZATION", "")
    if auth[:6].lower() == "basic ":
        import base64
        import binascii

        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("latin-1")
        except (binascii.Error, ValueError):
            return "-"
        return decoded.split(":", 1)[0] or "-"
    return "-"


def format_access(fmt: str, record: RequestRecord) -> str:
    return fmt % _Atoms(record)


def write_access(fmt: str, record: RequestRecord) -> None:
    """Log one request, never letting a bad format break the response."""
    try:
        access_log.info(format_access(fmt, record))
    except Exception:  # noqa: BLE001 - a bad format must not take down a worker
        log.exception("cannot format access log line with %r", fmt)


def scope_environ(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The CGI-style keys the access log atoms read, from an ASGI HTTP scope."""
    client = scope.get("client") or ("-", "")
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    environ: dict[str, Any] = {
        "REMOTE_ADDR": client[0],
        "REQUEST_METHOD": scope.get("method", "-"),
        "PATH_INFO": scope.get("path", ""),
        "QUERY_STRING": query,
        "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
    }
    for name, value in scope.get("headers", ()):
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ
