"""The control channel between the arbiter and one worker.

A ``SOCK_SEQPACKET`` socketpair keeps each message whole (and, later, each
passed descriptor with its message).  Messages are small JSON objects with
a ``kind``: the worker says ``ready``, ``boot_error`` and ``heartbeat``.
End of file means the other side is gone.
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_MESSAGE = 65536

READY = "ready"
BOOT_ERROR = "boot_error"
HEARTBEAT = "heartbeat"


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """Return (arbiter end, worker end)."""
        arbiter_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        arbiter_end.setblocking(False)
        return cls(arbiter_end), cls(worker_end)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, **fields: Any) -> bool:
        """Send without blocking; False if the peer is gone or its queue is full."""
        payload = json.dumps({"kind": kind, **fields}).encode()[:MAX_MESSAGE]
        try:
            self.sock.send(payload, socket.MSG_DONTWAIT)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
            return False
        return True

    def receive(self) -> list[dict[str, Any]] | None:
        """Every message waiting now, or None at end of file."""
        messages = []
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return messages
            except (ConnectionResetError, OSError):
                return None
            if not data:
                return None if not messages else messages
            try:
                messages.append(json.loads(data))
            except ValueError:
                continue

    def close(self) -> None:
        self.sock.close()
