"""The access log: one line per request, in gunicorn's format or as JSON.

A format such as ``%(h)s "%(r)s" %(s)s %({x-request-id}i)s`` is parsed
once, when the worker starts: only the atoms it names are computed for each
request.  Both workers describe a finished request with the same
``RequestRecord`` (the ASGI worker turns its scope into the CGI keys the
WSGI environ has), so a format gives the same fields under either.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clusterserve import logs
from clusterserve.logs import access_log, access_log_enabled, log
from clusterserve.second_cache import SecondCache


@dataclass(slots=True)
class RequestRecord:
    """What the access log needs to know about one finished request."""

    environ: Mapping[str, Any]
    status: str  # "200 OK" or "200"
    response_headers: list[tuple[str, str]]
    body_bytes: int
    started: float  # time.time() when the request head was complete
    duration: float  # seconds
    pid: int


# A line written straight to the accesslog file reaches it within this many seconds
# (the worker's loop flushes; see AccessLog).
FLUSH_DELAY = 0.1

Atom = Callable[[RequestRecord], Any]
ATOM_NAME = re.compile(r"%\(([^)]*)\)")


def _escaped(value: str) -> str:
    """As gunicorn: a double quote in a value cannot end a quoted field."""
    return value.replace('"', '\\"') if '"' in value else value


def _environ_atom(key: str, default: str = "-") -> Atom:
    return lambda record: _escaped(str(record.environ.get(key, default)))


def _request_line(record: RequestRecord) -> str:
    env = record.environ
    return _escaped(f"{env.get('REQUEST_METHOD', '-')} {env.get('RAW_URI', '-')} "
                    f"{env.get('SERVER_PROTOCOL', '-')}")


def _status_code(record: RequestRecord) -> str:
    return record.status.split(None, 1)[0]


_clf_time = SecondCache(lambda second: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))
_iso_time = SecondCache(lambda second: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))


def remote_user(environ: Mapping[str, Any]) -> str | None:
    """The user name of HTTP Basic authentication, if any."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip()).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    return decoded.split(":", 1)[0] or None


def _micros(record: RequestRecord) -> int:
    return round(record.duration * 1_000_000)


ATOMS: dict[str, Atom] = {
    "h": _environ_atom("REMOTE_ADDR"),
    "l": lambda record: "-",
    "u": lambda record: _escaped(remote_user(record.environ) or "-"),
    "t": lambda record: _clf_time(record.started),
    "r": _request_line,
    "m": _environ_atom("REQUEST_METHOD"),
    "U": _environ_atom("PATH_INFO", ""),
    "q": _environ_atom("QUERY_STRING", ""),
    "H": _environ_atom("SERVER_PROTOCOL"),
    "s": _status_code,
    "B": lambda record: record.body_bytes,
    "b": lambda record: str(record.body_bytes) if record.body_bytes else "-",
    "f": _environ_atom("HTTP_REFERER"),
    "a": _environ_atom("HTTP_USER_AGENT"),
    # All four from the same whole microseconds, as gunicorn takes them from one timedelta.
    "T": lambda record: _micros(record) // 1_000_000,
    "M": lambda record: _micros(record) // 1000,
    "D": _micros,
    "L": lambda record: f"{_micros(record) // 1_000_000}.{_micros(record) % 1_000_000:06d}",
    "p": lambda record: f"<{record.pid}>",
}

# Request headers the WSGI environ keeps without the HTTP_ prefix.
_UNPREFIXED = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _response_header(name: str) -> Atom:
    def atom(record: RequestRecord) -> str:
        for key, value in record.response_headers:
            if key.lower() == name:
                return _escaped(value)
        return "-"

    return atom


def _environ_variable(name: str) -> Atom:
    """``{name}e``: a key of the WSGI environ, in any case (gunicorn lowercases both sides)."""
    candidates = tuple(dict.fromkeys((name, name.upper(), name.lower())))

    def atom(record: RequestRecord) -> str:
        for key in candidates:
            if key in record.environ:
                return _escaped(str(record.environ[key]))
        return "-"

    return atom


def atom_for(name: str) -> Atom:
    """How to compute the atom ``%(name)s``; an unknown one is ``-``, as in gunicorn."""
    if name in ATOMS:
        return ATOMS[name]
    if len(name) > 3 and name[0] == "{" and name[-2] == "}":
        inner, kind = name[1:-2], name[-1]
        if kind == "i":
            key = _UNPREFIXED.get(inner.lower(), "HTTP_" + inner.upper().replace("-", "_"))
            return _environ_atom(key)
        if kind == "o":
            return _response_header(inner.lower())
        if kind == "e":
            return _environ_variable(inner)
    return lambda record: "-"


class _Zeros(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def check_format(fmt: str) -> str:
    """Raise ValueError for a format that no request could fill (checked at start)."""
    try:
        fmt % _Zeros()
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"not a valid %-format: {err}") from None
    return fmt


class TextFormat:
    """A gunicorn ``access_log_format``, parsed once."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.atoms = [(name, atom_for(name)) for name in dict.fromkeys(ATOM_NAME.findall(fmt))]

    def __call__(self, record: RequestRecord) -> str:
        return self.fmt % {name: atom(record) for name, atom in self.atoms}


# Made once: json.dumps with options builds a new encoder on every call.
_encode_json = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def json_line(record: RequestRecord) -> str:
    """``access_log_json``: one object per request; fields in docs/observability.md."""
    env = record.environ
    path = env.get("PATH_INFO", "")
    if not path.isascii():  # WSGI keeps the raw bytes as latin-1; show the text
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
    return _encode_json({
        "time": f"{_iso_time(record.started)}.{int(record.started % 1 * 1000):03d}Z",
        "remote_addr": env.get("REMOTE_ADDR"),
        "method": env.get("REQUEST_METHOD"),
        "path": path,
        "query": env.get("QUERY_STRING", ""),
        "protocol": env.get("SERVER_PROTOCOL"),
        "status": int(_status_code(record)),
        "bytes": record.body_bytes,
        "duration_ms": round(record.duration * 1000, 3),
        "referer": env.get("HTTP_REFERER"),
        "user_agent": env.get("HTTP_USER_AGENT"),
        "user": remote_user(env),
        "pid": record.pid,
    })


class AccessLog:
    """Writes one access log line per finished request, in the configured form.

    Lines written straight to the accesslog file are not flushed one by one: the
    worker's loop calls ``flush`` within ``FLUSH_DELAY`` of a line.  A write
    system call per request was the largest part of the cost: in the WSGI
    worker, made on an app thread, it hands the GIL to the loop thread and
    waits to get it back (measured on hello world: +42 us of CPU per request
    with the access log on, flushing every line; +7 us flushing at most every
    0.1 s).  Through ``logging`` (a log config), the handlers flush as they do.
    """

    def __init__(self, render: Callable[[RequestRecord], str]) -> None:
        self.render = render
        self.unflushed = False
        # A full disk fails every write and every flush until it has room: said every 10 s.
        self.write_failures = logs.Throttled()

    def write(self, record: RequestRecord) -> None:
        """Never lets a bad format or a full disk break the response."""
        try:
            line = self.render(record)
            handler = logs.direct_access_handler
            if (handler is not None and handler.stream is not None and not access_log.filters
                    and access_log.handlers == [handler]):
                # Only the accesslog handler can see the line: skip building a LogRecord and
                # formatting it again (measured in-process: 9 -> 3 us per line, with the flush).
                handler.acquire()
                try:
                    handler.stream.write(line + "\n")
                    self.unflushed = True
                finally:
                    handler.release()
            elif access_log.isEnabledFor(logging.INFO):
                # handle() skips Logger._log's caller lookup, a stack walk per line.
                access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0,
                                                        line, (), None))
        except OSError as err:
            self.write_failures.error("cannot write the access log: %s", err)
        except Exception:  # noqa: BLE001 - a bad format must not take down a worker
            log.exception("cannot write the access log line")

    def flush(self) -> None:
        """Write out the lines written since the last flush."""
        handler = logs.direct_access_handler
        if self.unflushed and handler is not None:
            self.unflushed = False  # before the flush: a line written meanwhile sets it again
            try:
                handler.flush()
            except (OSError, ValueError) as err:  # a full disk must not stop the worker's loop
                self.write_failures.error("cannot write the access log: %s", err)


def from_settings(cfg: Any) -> AccessLog | None:
    """The worker's access log, or None when it is off."""
    if not access_log_enabled(cfg):
        return None
    return AccessLog(json_line if cfg.access_log_json else TextFormat(cfg.access_log_format))


def scope_environ(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The CGI-style keys the atoms read, from an ASGI HTTP scope, as the WSGI worker sets them."""
    client = scope.get("client") or ("-", "")
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    environ: dict[str, Any] = {
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "REQUEST_METHOD": scope.get("method", "-"),
        "SCRIPT_NAME": scope.get("root_path", ""),
        # WSGI's PATH_INFO is the decoded bytes as latin-1; so is this.
        "PATH_INFO": scope.get("path", "").encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.url_scheme": scope.get("scheme", "http"),
    }
    for name, value in scope.get("headers", ()):
        header = name.decode("latin-1").lower()
        if "_" in header:
            continue  # the WSGI worker drops these (they would collide with their "-" twins)
        key = _UNPREFIXED.get(header) or "HTTP_" + header.upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ
