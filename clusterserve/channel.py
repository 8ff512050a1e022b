"""The control channel between the arbiter and one worker.

A ``SOCK_SEQPACKET`` socketpair keeps each message whole, and each passed
descriptor (``SCM_RIGHTS``) with its message.  Messages are small JSON
objects with a ``kind``.  End of file means the other side is gone.

Worker to arbiter: ``ready``, ``boot_error``, ``heartbeat``, ``retire`` (asks
for a replacement, after which the arbiter stops it), ``abort`` (asks to be
aborted at once: a request holds the loop thread that a stop would need); in
``round-robin`` mode also ``report`` (the connections it took, before it
reads them; and once per loop turn, how many it closed and whether it has
room now),
``decline`` for a connection it cannot hold, and ``handback`` (a
connection it took but will not serve, with its descriptor).
Arbiter to worker: ``may_hand_back`` just before a SIGTERM that retires only
this worker (others serve on); in ``round-robin`` mode ``connection`` with a
descriptor; in ``reuseport`` mode: ``adopt`` (a retired slot's sockets, to watch too) and
``release`` (stop watching that slot again).
"""

from __future__ import annotations

import array
import json
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE = 65536
MAX_FDS = 16
FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)

READY = "ready"
BOOT_ERROR = "boot_error"
HEARTBEAT = "heartbeat"
RETIRE = "retire"
ABORT = "abort"
CONNECTION = "connection"
REPORT = "report"
DECLINE = "decline"
HANDBACK = "handback"
MAY_HAND_BACK = "may_hand_back"
ADOPT = "adopt"
RELEASE = "release"
# What ``receive`` makes of data that is not a JSON object with a kind (the error in "error").
MALFORMED = ""


@dataclass
class Message:
    kind: str
    fields: dict[str, Any]
    fds: list[int] = field(default_factory=list)


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

    def send(self, kind: str, fds: Sequence[int] = (), **fields: Any) -> bool:
        """Send without blocking; False if the peer is gone or its queue is full."""
        return self._send(json.dumps({"kind": kind, **fields}).encode(), fds)

    def send_waiting(self, kind: str, timeout: float, **fields: Any) -> bool:
        """Send, waiting up to ``timeout`` seconds for room if the peer's queue is full."""
        payload = json.dumps({"kind": kind, **fields}).encode()
        if self._send(payload, ()):
            return True
        waiter = select.poll()
        waiter.register(self.sock.fileno(), select.POLLOUT)
        return bool(waiter.poll(timeout * 1000)) and self._send(payload, ())

    def _send(self, payload: bytes, fds: Sequence[int]) -> bool:
        try:
            # socket.send_fds/recv_fds would be simpler, but before Python 3.13
            # they drop their flags argument, and MSG_DONTWAIT with them.
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            self.sock.sendmsg([payload], ancillary, socket.MSG_DONTWAIT)
        except OSError:  # full (EAGAIN), or the peer is gone
            return False
        return True

    def receive(self) -> list[Message] | None:
        """Every message waiting now, or None at end of file."""
        messages: list[Message] = []
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(MAX_MESSAGE, FDS_SPACE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return messages
            except OSError:
                return messages or None
            fds = _descriptors(ancillary)
            if not data:
                return messages or None
            try:
                decoded = json.loads(data)
                kind = decoded.pop("kind")
                if not isinstance(kind, str) or kind == MALFORMED:
                    raise ValueError(kind)
            except (ValueError, KeyError, AttributeError, TypeError, RecursionError):
                messages.append(Message(MALFORMED, {"error": f"not a JSON object with a kind: {data[:40]!r}"},
                                        fds))
                continue
            messages.append(Message(kind, decoded, fds))

    def close(self) -> None:
        self.sock.close()


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)
