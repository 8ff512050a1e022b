"""statsd metrics over UDP, with gunicorn's metric names.

Names are gunicorn's (``gunicorn.requests``, ``gunicorn.request.duration``,
``gunicorn.request.status.200``, ``gunicorn.workers``) so that dashboards
built for gunicorn keep working after a move.  Each worker sends its own
request metrics as requests finish; the arbiter sends the worker count.
UDP keeps a slow or absent statsd daemon from ever holding up a request.
"""

from __future__ import annotations

import socket

DEFAULT_PORT = 8125


def parse_statsd_address(text: str) -> tuple[int, str | tuple[str, int]]:
    """``HOST:PORT`` (port 8125 when left out) or ``unix://PATH``, as gunicorn's
    ``statsd_host``; returns (address family, address)."""
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path:
            raise ValueError("unix:// needs a path")
        return socket.AF_UNIX, path
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or unix://PATH, got {text!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


class StatsdClient:
    """Sends statsd lines; sending never blocks and never raises."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        family, self.address = parse_statsd_address(address)
        # As gunicorn: a prefix gets exactly one trailing dot.
        stem = prefix.rstrip(".")
        self.prefix = f"{stem}." if stem else ""
        self.suffix = f"|#{tags}" if tags else ""  # dogstatsd tags
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def request(self, status: int, seconds: float) -> None:
        p, s = self.prefix, self.suffix
        self._send(f"{p}gunicorn.request.duration:{seconds * 1000:.3f}|ms{s}\n"
                   f"{p}gunicorn.requests:1|c{s}\n"
                   f"{p}gunicorn.request.status.{status}:1|c{s}")

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self.prefix}gunicorn.{name}:{value:g}|g{self.suffix}")

    def _send(self, lines: str) -> None:
        try:
            self.sock.sendto(lines.encode("ascii", "replace"), self.address)
        except OSError:
            pass  # no daemon, a full buffer: metrics are best effort

    def close(self) -> None:
        self.sock.close()
