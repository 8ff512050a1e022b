"""HAProxy's PROXY protocol: the header a TCP proxy sends before the client's bytes.

Version 1 is one text line (``PROXY TCP4 src dst sport dport\\r\\n``, at most
107 bytes); version 2 is binary: a 12-byte signature, a command, the
address family and a length, then the addresses and TLVs (skipped here).
The header is read off the socket without ever reading past its end (the
bytes are peeked first), so that what follows it, plain HTTP or a TLS
handshake, is left in the socket for whoever reads next.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family, length
V2_MAX = V2_FIXED + 0xFFFF

# v2 address blocks by family byte: (address length, socket family)
_V2_FAMILIES = {0x11: (4, socket.AF_INET), 0x21: (16, socket.AF_INET6)}
_V1_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}


class ProxyHeaderError(Exception):
    """A malformed PROXY header, or a missing one where it is required."""


@dataclass(frozen=True)
class ProxyInfo:
    """The addresses a PROXY header carries; None for LOCAL/UNKNOWN (health checks)."""

    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def _prefix_of(data: bytes, signature: bytes) -> bool:
    """``data`` starts like ``signature`` as far as both go."""
    n = min(len(data), len(signature))
    return data[:n] == signature[:n]


def header_length(data: bytes, mode: str) -> int | None:
    """The length of the header ``data`` starts with: None if more bytes are needed
    to tell, 0 if there is none (``auto`` mode only).

    ``mode`` is ``v1``, ``v2`` (that version, required) or ``auto`` (either, or none).
    """
    versions = ("v1", "v2") if mode == "auto" else (mode,)
    if "v1" in versions and _prefix_of(data, V1_PREFIX):
        if len(data) < len(V1_PREFIX):
            return None
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        if len(data) >= V1_MAX or b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("PROXY v1 line without CRLF within 107 bytes")
        return None
    if "v2" in versions and _prefix_of(data, V2_SIGNATURE):
        if len(data) < V2_FIXED:
            return None
        return V2_FIXED + int.from_bytes(data[14:16], "big")
    if mode == "auto":
        return 0
    raise ProxyHeaderError(f"expected a PROXY {mode} header")


def parse_header(header: bytes) -> ProxyInfo:
    """The addresses of one complete header (as ``header_length`` delimited it)."""
    if header.startswith(V1_PREFIX):
        return _parse_v1(header)
    return _parse_v2(header)


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")):
        raise ProxyHeaderError(f"bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"bad port {text!r}")
    return port


def _parse_v1(header: bytes) -> ProxyInfo:
    parts = header[:-2].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyInfo()
    if len(parts) != 6 or parts[1] not in _V1_FAMILIES:
        raise ProxyHeaderError(f"bad PROXY v1 line {header!r}")
    address_type = _V1_FAMILIES[parts[1]]
    try:
        source, destination = (str(address_type(a.decode("ascii"))) for a in parts[2:4])
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"bad address in PROXY v1 line {header!r}") from None
    return ProxyInfo((source, _port(parts[4])), (destination, _port(parts[5])))


def _parse_v2(header: bytes) -> ProxyInfo:
    version_command, family = header[12], header[13]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyInfo()
    if command != 1:
        raise ProxyHeaderError(f"PROXY v2 header with command {command}")
    if family not in _V2_FAMILIES:
        return ProxyInfo()  # UNSPEC, UNIX or datagrams: no TCP client address to report
    size, socket_family = _V2_FAMILIES[family]
    block = header[V2_FIXED:]
    if len(block) < 2 * size + 4:
        raise ProxyHeaderError("PROXY v2 address block shorter than its family needs")
    source = socket.inet_ntop(socket_family, block[:size])
    destination = socket.inet_ntop(socket_family, block[size:2 * size])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return ProxyInfo((source, source_port), (destination, destination_port))


class ProxyHeaderReader:
    """Reads one PROXY header from a non-blocking socket, a readiness event at a time.

    ``read`` returns None until it is done, then ``(info, leftover)``: ``info``
    is None when an ``auto`` connection sent no header, and ``leftover`` holds
    the few bytes consumed while telling a header from a request (they belong
    to the request).  Raises ``ProxyHeaderError`` for a bad or missing header
    and ``ConnectionResetError`` when the peer closes first.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._held = b""  # bytes consumed: all of them are (possibly) the header's

    def read(self, sock: socket.socket) -> tuple[ProxyInfo | None, bytes] | None:
        try:
            peeked = sock.recv(V2_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return None
        if not peeked:
            raise ConnectionResetError("closed before the PROXY header ended")
        data = self._held + peeked
        length = header_length(data, self.mode)
        if length == 0:
            return None, self._held
        if length is None or length > len(data):
            # Everything so far belongs to the header: consume it, so that the
            # socket is not readable again until more arrives.
            self._held += sock.recv(len(peeked))
            return None
        header = data[:length]
        sock.recv(length - len(self._held))  # exactly the rest of the header: it is there
        return parse_header(header), b""
