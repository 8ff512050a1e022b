"""The binary messages that pass connections between the arbiter and a worker.

``round-robin`` dispatch sends one or a few of these per connection, so
they are packed with ``struct`` rather than written as JSON.  Each starts
with its kind byte and a fixed header that says how many records follow;
every record has a fixed size.

- ``CONNECTIONS`` (arbiter to worker): up to ``MAX_FDS`` connections, one
  descriptor each (``SCM_RIGHTS``, in record order), each record its id
  and the client's address.
- ``REPORT`` (worker to arbiter): the ids it took (acknowledged before it
  reads a byte of them) and declined, how many connections it closed since
  its last report, and whether it has room now, if that changed.
- ``HANDBACK`` (worker to arbiter): connections it took but will not
  serve, with their descriptors, each record the client's address.

Decoding checks every field: a count that disagrees with the length, an id
of 0, an unknown family or room value, an address that is not one, or
descriptors that do not match the records make the message malformed
(``WireError``).  The arbiter then replaces the worker that sent it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# The kernel's limit of descriptors in one SCM_RIGHTS message (SCM_MAX_FD); a larger
# sendmsg fails with EINVAL.
MAX_FDS = 253
# Ids in one report: keeps a report well within the receiver's buffer (MAX_MESSAGE).
MAX_IDS = 4096

CONNECTIONS_CODE = 0x10
REPORT_CODE = 0x11
HANDBACK_CODE = 0x12

# kind byte, padding, record count
COUNTED = struct.Struct("<BxH")
# kind byte, room (ROOM_*), ids taken, ids declined, connections closed; then the ids
REPORT_HEADER = struct.Struct("<BBHHQ")
ID = struct.Struct("<Q")
# family, port, IPv6 flow info, IPv6 scope id, host as text (empty: the receiver asks the kernel)
PEER = struct.Struct("<HHII64s")
# connection id, then the peer as above
PASSED = struct.Struct("<QHHII64s")

MAX_CLOSED = 2**63 - 1
ROOM_UNCHANGED, ROOM_NONE, ROOM_FREE = 0, 1, 2
FAMILIES = frozenset({int(socket.AF_INET), int(socket.AF_INET6), int(socket.AF_UNIX)})
INET_FAMILIES = frozenset({int(socket.AF_INET), int(socket.AF_INET6)})

Peer = Any  # a TCP address tuple as accept() gives it, or None


class WireError(ValueError):
    """A binary message that is not what its kind says; the text says what is wrong."""


@dataclass(slots=True)
class Connections:
    """Connections passed to a worker: their ids and peers, in the order of ``fds``."""

    kind: ClassVar[str] = "connections"
    ids: list[int]
    families: list[int]
    peers: list[Peer]
    fds: list[int]
    truncated: bool  # MSG_CTRUNC: the kernel could not give this process every descriptor


@dataclass(slots=True)
class Report:
    """What a worker says after each read of its channel and once per loop turn."""

    kind: ClassVar[str] = "report"
    taken: tuple[int, ...]
    declined: tuple[int, ...]
    closed: int
    room: bool | None  # None: unchanged
    fds: list[int]


@dataclass(slots=True)
class Handback:
    """Connections a worker gives back untouched, for another worker."""

    kind: ClassVar[str] = "handback"
    families: list[int]
    peers: list[Peer]
    fds: list[int]
    truncated: bool


Packed = Connections | Report | Handback


# -- packing -----------------------------------------------------------------------


def _peer_fields(family: int, peer: Peer) -> tuple[int, int, int, bytes]:
    """(port, flow info, scope id, host) of a TCP peer; zeros and no host otherwise."""
    if family not in INET_FAMILIES or not isinstance(peer, tuple):
        return 0, 0, 0, b""
    host = peer[0].encode("ascii", "replace")
    if len(host) > 64:
        return 0, 0, 0, b""
    if family == socket.AF_INET6:
        return peer[1], peer[2], peer[3], host
    return peer[1], 0, 0, host


def pack_connections(ids: Sequence[int], families: Sequence[int], peers: Sequence[Peer]) -> bytes:
    """A ``CONNECTIONS`` message; send it with the descriptors in the same order."""
    pack = PASSED.pack
    records = zip(ids, families, peers, strict=True)
    return COUNTED.pack(CONNECTIONS_CODE, len(ids)) + b"".join(
        pack(conn_id, family, *_peer_fields(family, peer)) for conn_id, family, peer in records)


def pack_report(taken: Sequence[int], declined: Sequence[int], closed: int, room: bool | None) -> bytes:
    """A ``REPORT``, of at most ``MAX_IDS`` ids (``room`` None: unchanged)."""
    if len(taken) + len(declined) > MAX_IDS:
        raise ValueError(f"{len(taken) + len(declined)} ids in one report")
    room_byte = ROOM_UNCHANGED if room is None else ROOM_FREE if room else ROOM_NONE
    return (REPORT_HEADER.pack(REPORT_CODE, room_byte, len(taken), len(declined), min(closed, MAX_CLOSED))
            + struct.pack(f"<{len(taken) + len(declined)}Q", *taken, *declined))


def pack_handback(family: int, peer: Peer) -> bytes:
    """A ``HANDBACK`` of one connection; send it with its descriptor."""
    return COUNTED.pack(HANDBACK_CODE, 1) + PEER.pack(family, *_peer_fields(family, peer))


# -- unpacking ---------------------------------------------------------------------


def unpack(data: bytes, fds: list[int], truncated: bool) -> Packed:
    """Decode a message whose kind byte is one of this module's; raises ``WireError``."""
    code = data[0]
    if code == REPORT_CODE:
        return _unpack_report(data, fds)
    if code == CONNECTIONS_CODE:
        ids, families, peers = _unpack_records(data, PASSED, fds, truncated, strict=False)
        return Connections(ids, families, peers, fds, truncated)
    if code == HANDBACK_CODE:
        _, families, peers = _unpack_records(data, PEER, fds, truncated, strict=True)
        return Handback(families, peers, fds, truncated)
    raise WireError(f"unknown kind byte 0x{code:02x}")


def _unpack_report(data: bytes, fds: list[int]) -> Report:
    if len(data) < REPORT_HEADER.size:
        raise WireError(f"a report of {len(data)} bytes")
    _, room, taken_count, declined_count, closed = REPORT_HEADER.unpack_from(data)
    count = taken_count + declined_count
    if len(data) != REPORT_HEADER.size + count * ID.size:
        raise WireError(f"a report of {len(data)} bytes with {count} ids")
    if count > MAX_IDS:
        raise WireError(f"a report with {count} ids")
    if room not in (ROOM_UNCHANGED, ROOM_NONE, ROOM_FREE):
        raise WireError(f"a report with room {room}")
    if closed > MAX_CLOSED:
        raise WireError(f"a report of {closed} closed connections")
    if fds:
        raise WireError(f"{len(fds)} descriptors with a report")
    ids = struct.unpack_from(f"<{count}Q", data, REPORT_HEADER.size)
    if 0 in ids:
        raise WireError("a report with connection id 0")
    return Report(ids[:taken_count], ids[taken_count:], closed,
                  None if room == ROOM_UNCHANGED else room == ROOM_FREE, fds)


def _unpack_records(data: bytes, record: struct.Struct, fds: list[int], truncated: bool,
                    strict: bool) -> tuple[list[int], list[int], list[Peer]]:
    """The ids (for ``PASSED``), families and peers of a counted message.

    ``strict`` (what a worker sends): each host must be an address of its family.
    """
    if len(data) < COUNTED.size:
        raise WireError(f"a message of {len(data)} bytes")
    _, count = COUNTED.unpack_from(data)
    if count == 0 or count > MAX_FDS or len(data) != COUNTED.size + count * record.size:
        raise WireError(f"{len(data)} bytes for {count} connections")
    # What the kernel could not install is lost (MSG_CTRUNC), so fewer may arrive; never more.
    if len(fds) > count or (len(fds) < count and not truncated):
        raise WireError(f"{len(fds)} descriptors with {count} connections")
    ids: list[int] = []
    families: list[int] = []
    peers: list[Peer] = []
    with_id = record is PASSED
    for fields in record.iter_unpack(memoryview(data)[COUNTED.size:]):
        if with_id:
            if fields[0] == 0:
                raise WireError("connection id 0")
            ids.append(fields[0])
        family, port, flowinfo, scope, raw_host = fields[1:] if with_id else fields
        families.append(family)
        peers.append(_peer(family, port, flowinfo, scope, raw_host, strict))
    return ids, families, peers


def _peer(family: int, port: int, flowinfo: int, scope: int, raw_host: bytes, strict: bool) -> Peer:
    if family not in FAMILIES:
        raise WireError(f"address family {family}")
    host_bytes = raw_host.rstrip(b"\0")
    if not host_bytes:
        if port or flowinfo or scope:
            raise WireError("a port without a host")
        return None
    if family not in INET_FAMILIES or b"\0" in host_bytes or not host_bytes.isascii():
        raise WireError(f"host {raw_host[:20]!r} for family {family}")
    host = host_bytes.decode("ascii")
    if strict:
        try:
            socket.inet_pton(family, host.partition("%")[0])
        except OSError:
            raise WireError(f"host {host!r} for family {family}") from None
    if family == socket.AF_INET6:
        return host, port, flowinfo, scope
    if flowinfo or scope:
        raise WireError("IPv6 fields with an IPv4 address")
    return host, port
