"""The control channel between the arbiter and one worker.

A ``SOCK_SEQPACKET`` socketpair keeps each message whole, and each passed
descriptor (``SCM_RIGHTS``) with its message.  Every message starts with a
kind byte.  The ones that pass connections in ``round-robin`` mode, one or
a few per connection, are packed binary (``dispatch/wire.py``:
``connections``, ``report``, ``handback``); the others, a few a second, are
the kind byte and then a JSON object of fields.  End of file means the
other side is gone.  When the kernel could not give the receiver every
descriptor of a message (``MSG_CTRUNC``: it is out of descriptors), the
message says so (``truncated``), and holds the ones that did arrive.

Worker to arbiter: ``ready``, ``boot_error``, ``heartbeat``, ``retire`` (asks
for a replacement, after which the arbiter stops it), ``abort`` (asks to be
aborted at once: a request holds the loop thread that a stop would need); in
``round-robin`` mode also ``report`` (after each read of its channel: the
connections it took, before it reads them, and those it declined; and once
per loop turn, how many it closed and whether it has room now), and
``handback`` (a connection it took but will not serve, with its descriptor).
Arbiter to worker: ``may_hand_back`` just before a SIGTERM that retires only
this worker (others serve on); in ``round-robin`` mode ``connections`` with
their descriptors; in ``reuseport`` mode: ``adopt`` (a retired slot's
sockets, to watch too) and ``release`` (stop watching that slot again).
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterserve.dispatch import wire

MAX_MESSAGE = 65536
FDS_SPACE = socket.CMSG_SPACE(wire.MAX_FDS * array.array("i").itemsize)
# recvmsg's flags, as ints (an IntFlag's operators run in Python)
TRUNC = int(socket.MSG_TRUNC)
CTRUNC = int(socket.MSG_CTRUNC)

READY = "ready"
BOOT_ERROR = "boot_error"
HEARTBEAT = "heartbeat"
RETIRE = "retire"
ABORT = "abort"
MAY_HAND_BACK = "may_hand_back"
ADOPT = "adopt"
RELEASE = "release"
# The kinds whose fields are JSON, by kind byte.
JSON_KINDS = {1: READY, 2: BOOT_ERROR, 3: HEARTBEAT, 4: RETIRE, 5: ABORT, 6: MAY_HAND_BACK, 7: ADOPT, 8: RELEASE}
KIND_BYTES = {kind: bytes([code]) for code, kind in JSON_KINDS.items()}
# What ``receive`` makes of data that is no message (the error in "error").
MALFORMED = ""


@dataclass(slots=True)
class Message:
    kind: str
    fields: dict[str, Any]
    fds: list[int] = field(default_factory=list)
    truncated: bool = False  # MSG_CTRUNC: descriptors sent with it were lost on the way


Received = Message | wire.Packed


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
        """Send a JSON kind without blocking; False if the peer is gone or its queue is full."""
        return self.send_bytes(KIND_BYTES[kind] + json.dumps(fields).encode(), fds)

    def send_bytes(self, payload: bytes, fds: Sequence[int] = ()) -> bool:
        """Send a whole message (a packed one) without blocking; False as ``send``."""
        try:
            # socket.send_fds/recv_fds would be simpler, but before Python 3.13
            # they drop their flags argument, and MSG_DONTWAIT with them.
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            self.sock.sendmsg([payload], ancillary, socket.MSG_DONTWAIT)
        except OSError:  # full (EAGAIN), or the peer is gone
            return False
        return True

    def send_bytes_waiting(self, payload: bytes, timeout: float) -> bool:
        """Send, waiting up to ``timeout`` seconds for room if the peer's queue is full."""
        if self.send_bytes(payload):
            return True
        waiter = select.poll()
        waiter.register(self.sock.fileno(), select.POLLOUT)
        return bool(waiter.poll(timeout * 1000)) and self.send_bytes(payload)

    def receive(self) -> list[Received] | None:
        """Every message waiting now, or None at end of file."""
        messages: list[Received] = []
        while True:
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(MAX_MESSAGE, FDS_SPACE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return messages
            except OSError:
                return messages or None
            fds = _descriptors(ancillary) if ancillary else []
            if not data:
                for fd in fds:
                    os.close(fd)
                return messages or None
            if flags & TRUNC:
                messages.append(Message(MALFORMED, {"error": f"a message longer than {MAX_MESSAGE} bytes"}, fds))
                continue
            messages.append(_decode(data, fds, bool(flags & CTRUNC)))

    def close(self) -> None:
        self.sock.close()


def _decode(data: bytes, fds: list[int], truncated: bool) -> Received:
    kind = JSON_KINDS.get(data[0])
    if kind is None:
        try:
            return wire.unpack(data, fds, truncated)
        except wire.WireError as err:
            return Message(MALFORMED, {"error": str(err)}, fds, truncated)
    try:
        fields = json.loads(data[1:])
    except (ValueError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        return Message(MALFORMED, {"error": f"{kind!r} without a JSON object: {data[1:41]!r}"}, fds, truncated)
    return Message(kind, fields, fds, truncated)


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)
