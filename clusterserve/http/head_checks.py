"""The worker's own checks on raw request bytes, where h11 is too lenient.

h11 parses the request line and the fields, checks tokens, the field
grammar and ``Host``, but it accepts some requests that a proxy in front of
the server may frame differently, which is how request smuggling starts:
obsolete line folding, bare LF line ends, control characters in values, a
``Content-Length`` list, ``Transfer-Encoding`` on HTTP/1.0 or next to
``Content-Length``, whitespace after a chunk size, a bare CR in a chunk
extension, framing fields in the trailers.  It also leaves the version and
the form of the request target to the server.  ``check_head`` runs on a
complete head before the codec sees it, ``ChunkedBodyCheck`` follows a
chunked body; both refuse with an ``HttpError``.
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypeVar

from clusterserve.http.errors import HttpError

# The blank line that ends a head, found the way h11 finds it (bare LF too),
# so that every head h11 parses has been checked here first.
HEAD_END = re.compile(rb"\n\r?\n")
# Control characters other than HTAB, CR and LF.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The fields that frame the body, type it or name the host: one scan of the head
# finds them (h11 and llhttp refuse a field line without a colon or with space before it).
_FRAMING_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|content-type|host):([^\r]*)",
                             re.IGNORECASE)
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_ABSOLUTE_FORM = re.compile(rb"https?://[^/?#]", re.IGNORECASE)
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 section 7.1: chunk-size [ chunk-ext ], BWS only around ";" and "=".
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*" % (TOKEN, TOKEN, _QUOTED))
Data = TypeVar("Data", bytes, bytearray)  # what a ChunkedBodyCheck decodes, and the pieces it gives back
# Fields a trailer must not carry (RFC 9110 section 6.5.1): the framing and
# routing the head has settled already, which a proxy might merge back in.
FORBIDDEN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host"))


class Framing(NamedTuple):
    """How a checked head frames its body: a Content-Length, chunked, or neither (no body)."""

    length: int | None
    chunked: bool


NO_BODY = Framing(None, False)


class HeadEnd:
    """Finds the blank line that ends a head as bytes arrive, without rescanning them.

    ``end`` is the offset just past it in the bytes received since ``reset``,
    or -1 while the head is incomplete.
    """

    def __init__(self) -> None:
        self.end = -1
        self._size = 0
        self._tail = b""  # the last two bytes received

    def reset(self, pending: bytes) -> None:
        """Start a new head with the bytes already received for it."""
        match = HEAD_END.search(pending)
        self.end = match.end() if match else -1
        self._size = len(pending)
        self._tail = pending[-2:]

    def feed(self, data: bytes) -> None:
        if self.end >= 0 or not data:
            return
        across = HEAD_END.search(self._tail + data[:2])
        inside = across or HEAD_END.search(data)
        if across:
            self.end = self._size - len(self._tail) + across.end()
        elif inside:
            self.end = self._size + inside.end()
        self._size += len(data)
        self._tail = data[-2:] if len(data) > 1 else self._tail[-1:] + data


def check_head(head: bytes) -> Framing:
    """Refuse a head that h11 or llhttp would accept but should not; else say how its
    body is framed.

    ``head`` runs up to and including the blank line that ends it.
    """
    check_characters(head)
    check_no_folding(head)
    method, target, version = split_request_line(head[:head.index(b"\r\n")])
    check_version(version)
    check_method(method)
    check_target(method, target)
    lengths: list[bytes] = []
    codings: list[bytes] = []
    content_types = hosts = 0
    for name, value in _FRAMING_FIELDS.findall(head):
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            codings.extend(_list_items(value.lower()))
        elif name == b"content-type":
            content_types += 1
        else:
            hosts += 1
    check_content_length(lengths)
    if content_types > 1:
        raise HttpError(400, "more than one Content-Type")
    check_transfer_coding(codings, version, bool(lengths))
    check_host_count(hosts, version)
    if codings:
        return Framing(None, True)
    return Framing(int(lengths[0]), False) if lengths else NO_BODY


def _list_items(value: bytes) -> list[bytes]:
    """The elements of a comma-separated field value, empty ones dropped (RFC 9110 section 5.6.1)."""
    return [item for item in (part.strip(b" \t") for part in value.split(b",")) if item]


def check_characters(head: bytes) -> None:
    """No CR or LF outside a CRLF line end, no NUL or other control character."""
    line_ends = head.count(b"\r\n")
    if head.count(b"\n") != line_ends:
        raise HttpError(400, "bare LF line end")
    if head.count(b"\r") != line_ends:
        raise HttpError(400, "bare CR")
    control = _CONTROL.search(head)
    if control is not None:
        raise HttpError(400, f"control character {control.group()!r} in the head")


def check_no_folding(head: bytes) -> None:
    """Obsolete line folding (RFC 9112 section 5.2): a server may refuse it, and does."""
    if b"\n " in head or b"\n\t" in head:
        raise HttpError(400, "obsolete line folding")


def split_request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    return parts[0], parts[1], parts[2]


def check_version(version: bytes) -> None:
    """HTTP/1.0 and HTTP/1.1 only; another well-formed one (2.0, as in ``PRI *``) gets 505."""
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HttpError(400, "malformed HTTP version")
    if match.group(1) != b"1" or match.group(2) not in (b"0", b"1"):
        raise HttpError(505, f"HTTP/{match.group(1).decode()}.{match.group(2).decode()} is not supported")


def check_host_count(hosts: int, version: bytes) -> None:
    """One ``Host`` field, and on HTTP/1.1 one is required (RFC 9112 section 3.2): h11's
    rule, with its words, and llhttp does not check it."""
    if hosts > 1:
        raise HttpError(400, "Found multiple Host headers")
    if hosts == 0 and version == b"HTTP/1.1":
        raise HttpError(400, "Missing mandatory Host header")


def check_method(method: bytes) -> None:
    """CONNECT asks for a tunnel, which a WSGI app cannot give (h11 checks the token)."""
    if method == b"CONNECT":
        raise HttpError(501, "CONNECT is not supported")


def check_target(method: bytes, target: bytes) -> None:
    """Origin form, absolute form (http and https), or ``*`` for OPTIONS (RFC 9112 section 3.2)."""
    if target.startswith(b"/") or _ABSOLUTE_FORM.match(target):
        return
    if target == b"*":
        if method == b"OPTIONS":
            return
        raise HttpError(400, "a * target is only for OPTIONS")
    raise HttpError(400, "request target must be a path or an http(s) URL")


def check_content_length(lengths: list[bytes]) -> None:
    """One Content-Length of digits only: no list, sign, or second field (RFC 9112 section 6.3)."""
    if len(lengths) > 1:
        raise HttpError(400, "more than one Content-Length")
    if lengths and not lengths[0].isdigit():
        raise HttpError(400, "Content-Length is not a number")


def check_transfer_coding(codings: list[bytes], version: bytes, has_length: bool) -> None:
    """Refuse framing that cannot be read one way only; chunked alone passes.

    RFC 9112 section 6.1: chunked must come last and once; with Content-Length
    or on HTTP/1.0 the framing is ambiguous (request smuggling), so 400.  Any
    other coding is one this server does not decode: 501.
    """
    if not codings:
        return
    if has_length:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if version != b"HTTP/1.1":
        raise HttpError(400, "Transfer-Encoding on HTTP/1.0")
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        raise HttpError(400, "chunked must be the last transfer coding, and only once")
    if len(codings) > 1:
        raise HttpError(501, f"unsupported transfer coding {codings[0].decode('latin-1')!r}")


class ChunkedBodyCheck:
    """Follows a chunked body on the raw bytes as they arrive: checks it, and decodes it.

    Checks each chunk-size line strictly (h11 takes whitespace after the
    size and anything after a ``;``), the CRLF after each chunk's data, and
    the trailer lines.  The h11 codec only checks (h11 decodes); the
    httptools codec takes the decoded data too.
    """

    MAX_LINE = 4096

    def __init__(self) -> None:
        self._line = bytearray()
        self._skip = 0  # bytes of chunk data still to pass over
        self._state = "size"  # then "data-end", "trailer", "done"
        self._error: HttpError | None = None

    @property
    def done(self) -> bool:
        """The last chunk and the trailers have arrived."""
        return self._state == "done"

    def feed(self, data: Data) -> None:
        """Check the next bytes; once refused, every later call refuses too."""
        self.decode(data)

    def decode(self, data: Data) -> tuple[list[Data], int]:
        """Check the next bytes: the chunk data in them, and how many were the body's."""
        if self._error is None:
            try:
                return self._feed(data)
            except HttpError as err:
                self._error = err
        raise self._error

    def _feed(self, data: Data) -> tuple[list[Data], int]:
        pieces: list[Data] = []
        pos, size = 0, len(data)
        while pos < size and self._state != "done":
            if self._skip:
                step = min(self._skip, size - pos)
                pieces.append(data[pos:pos + step])
                self._skip -= step
                pos += step
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > self.MAX_LINE:
                    raise HttpError(400, "chunk line too long")
                return pieces, size
            self._line += data[pos:end + 1]
            pos = end + 1
            line = bytes(self._line)
            self._line.clear()
            self._on_line(line)
        return pieces, pos

    def _on_line(self, line: bytes) -> None:
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise HttpError(400, "bare CR or LF in the chunked body")
        line = line[:-2]
        if self._state == "size":
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise HttpError(400, "malformed chunk size line")
            self._skip = int(match.group(1), 16)
            self._state = "data-end" if self._skip else "trailer"
        elif self._state == "data-end":
            if line:
                raise HttpError(400, "chunk data longer than its size")
            self._state = "size"
        elif not line:
            self._state = "done"
        else:
            check_trailer_line(line)


def check_trailer_line(line: bytes) -> None:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding in the trailers")
    if _CONTROL.search(line):
        raise HttpError(400, "control character in the trailers")
    if line.partition(b":")[0].lower() in FORBIDDEN_TRAILERS:
        raise HttpError(400, "a framing or routing field in the trailers")
