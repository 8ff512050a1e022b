"""systemd's notify protocol: a few lines over a datagram socket, when NOTIFY_SOCKET is set."""

from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> None:
    """Send ``READY=1``-style lines to systemd; nothing happens outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            pass  # systemd went away; serving goes on


def monotonic_usec() -> str:
    """The field systemd wants with RELOADING=1 (CLOCK_MONOTONIC, microseconds)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
