"""``--http httptools``: heads parsed by llhttp (C), bodies and responses framed here.

llhttp parses only the head, which ``check_head`` has already accepted:
the request line and the fields, with their grammar checked strictly.  The
body's framing comes from the head (``Content-Length``, or chunked, decoded
by ``ChunkedBodyCheck``), so bytes past the body, a pipelined request, stay
in the buffer for the next cycle.  The rules that h11 applies to a server
are kept here one by one (each rule names h11's): which requests keep the
connection open, ``100-continue``, the framing fields of a response.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import httptools

from clusterserve.http.codec import END, NEED_DATA, Marker, RequestHead, refusal
from clusterserve.http.head_checks import TOKEN, ChunkedBodyCheck, HeadEnd, check_host_count

_CONTINUE = b"HTTP/1.1 100 \r\n\r\n"
_METHOD = re.compile(TOKEN)
BODILESS_STATUSES = (204, 304)


class _State(enum.Enum):
    IDLE = "idle"  # client: waiting for a head; server: no response started
    BODY = "body"  # client: body to read; server: sending the body
    DONE = "done"
    MUST_CLOSE = "must close"  # server: done, and the connection closes


class _Framing(enum.Enum):
    NONE = "none"  # no body (HEAD, 204, 304)
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"  # HTTP/1.0 client, length unknown


def _tokens(value: bytes) -> list[bytes]:
    """The lower-cased items of a comma-separated field value (h11's get_comma_header)."""
    return [item.strip(b" \t").lower() for item in value.split(b",")]


class _HeadParser:
    """httptools callbacks for one head."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing whitespace


class HttptoolsCodec:
    def __init__(self, max_head: int) -> None:
        self._max_head = max_head
        self._buffer = bytearray()
        self._head_end = HeadEnd()  # found as bytes arrive: a head sent bytewise is not rescanned
        self._closed = False  # the client closed its side
        self._theirs = _State.IDLE
        self._ours = _State.IDLE
        self._keep_alive = True
        self._http_version = b"1.1"
        self._method = b""
        self._remaining = 0  # body bytes still to read (Content-Length)
        self._chunks: ChunkedBodyCheck | None = None
        self._framing = _Framing.NONE
        self._expects_continue = False

    @property
    def pending(self) -> bytes:
        return bytes(self._buffer)

    @property
    def awaiting_head(self) -> bool:
        return self._theirs is _State.IDLE

    @property
    def expects_continue(self) -> bool:
        return self._expects_continue

    @property
    def reusable(self) -> bool:
        return self._ours is _State.DONE

    @property
    def body_unread(self) -> bool:
        return self._theirs is _State.BODY

    def receive(self, data: bytes) -> None:
        if data:
            self._buffer += data
            if self._theirs is _State.IDLE:
                self._head_end.feed(data)
        else:
            self._closed = True

    # -- the request ---------------------------------------------------------

    def next_head(self) -> RequestHead | None:
        if self._theirs is not _State.IDLE:
            raise ConnectionResetError("a request head asked for in the middle of a request")
        end = self._head_end.end
        if end < 0:
            if len(self._buffer) > self._max_head:
                raise refusal(431, "Receive buffer too long")
            if not self._closed:
                return None
            if self._buffer:
                raise refusal(400, "peer unexpectedly closed the connection in the middle of a head")
            raise ConnectionResetError("client closed the connection")
        head = self._parse(bytes(self._buffer[:end]))
        del self._buffer[:end]
        return head

    def _parse(self, raw: bytes) -> RequestHead:
        # llhttp knows a fixed list of methods; h11 takes any token, and so do we.
        # A request's framing does not depend on its method (CONNECT is refused).
        method = raw[:raw.index(b" ")]
        if not _METHOD.fullmatch(method):
            raise refusal(400, "malformed request method")
        callbacks = _HeadParser()
        parser = httptools.HttpRequestParser(callbacks)
        try:
            parser.feed_data(b"GET" + raw[len(method):])
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade request is served as a plain one (no protocol switch in WSGI)
        except httptools.HttpParserError as err:
            raise refusal(400, f"malformed request head: {err}") from None
        version = parser.get_http_version().encode("ascii")
        self._start_request(method, version, callbacks.headers)
        return RequestHead(method, callbacks.url, version, callbacks.headers)

    def _start_request(self, method: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Framing, keep-alive and 100-continue from the fields (``check_head`` ran)."""
        hosts = 0
        length = 0
        chunked = close = expect = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"host":
                hosts += 1
            elif lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"connection":
                close = close or b"close" in _tokens(value)
            elif lower == b"expect":
                expect = expect or b"100-continue" in _tokens(value)
        check_host_count(hosts, b"HTTP/" + version)  # check_head has too; the codec holds alone
        self._method = method
        self._http_version = version
        self._keep_alive = not close and version == b"1.1"  # h11's _keep_alive
        self._expects_continue = expect and version == b"1.1"  # has_expect_100_continue
        self._chunks = ChunkedBodyCheck() if chunked else None
        self._remaining = length
        self._theirs = _State.BODY if chunked or length else _State.DONE

    def next_body(self) -> bytes | Marker:
        if self._theirs is _State.DONE:
            return END
        if self._theirs is not _State.BODY:
            raise ConnectionError("no request body to read")
        if not self._buffer:
            if self._closed:
                self._theirs = _State.MUST_CLOSE
                raise refusal(400, "peer closed connection without sending complete message body")
            return NEED_DATA
        self._expects_continue = False  # the client sent body bytes (h11 clears it then)
        if self._chunks is None:
            data = bytes(self._buffer[:self._remaining])
            del self._buffer[:len(data)]
            self._remaining -= len(data)
        else:
            pieces, used = self._chunks.decode(self._buffer)
            data = b"".join(pieces)
            del self._buffer[:used]
        if self._remaining == 0 and (self._chunks is None or self._chunks.done):
            self._theirs = _State.DONE
        if data:
            return data
        return END if self._theirs is _State.DONE else self.next_body()

    # -- the response --------------------------------------------------------

    def continue_response(self) -> bytes:
        self._expects_continue = False
        return _CONTINUE

    def response_head(self, status_code: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """Framed as h11 frames it (``_clean_up_response_headers_for_sending``): a HEAD
        response has the fields a GET would; with no length, chunked for HTTP/1.1 and
        until close for HTTP/1.0; ``Connection: close`` added when the request (or the
        framing) closes the connection."""
        self._expects_continue = False
        has_length = chunked_asked = close_asked = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            elif lower == b"transfer-encoding":
                chunked_asked = b"chunked" in _tokens(value)
            elif lower == b"connection":
                close_asked = close_asked or b"close" in _tokens(value)
        bodiless = status_code in BODILESS_STATUSES
        unknown_length = not bodiless and (chunked_asked or not has_length)
        need_close = False
        if unknown_length:
            headers = [(name, value) for name, value in headers
                       if name.lower() not in (b"content-length", b"transfer-encoding")]
            if self._http_version == b"1.1":
                headers.append((b"Transfer-Encoding", b"chunked"))
            else:
                need_close = self._method != b"HEAD"
        if not self._keep_alive or need_close:
            tokens = {token for name, value in headers if name.lower() == b"connection"
                      for token in _tokens(value)}
            tokens.discard(b"keep-alive")
            tokens.add(b"close")
            headers = [(name, value) for name, value in headers if name.lower() != b"connection"]
            headers.append((b"Connection", b", ".join(sorted(tokens))))
        self._keep_alive = self._keep_alive and not (need_close or close_asked)
        if self._method == b"HEAD" or bodiless:
            self._framing = _Framing.NONE
        elif unknown_length:
            self._framing = _Framing.CHUNKED if self._http_version == b"1.1" else _Framing.UNTIL_CLOSE
        else:
            self._framing = _Framing.LENGTH
        self._ours = _State.BODY
        lines = [b"HTTP/1.1 %d %s\r\n" % (status_code, reason)]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        lines.append(b"\r\n")
        return b"".join(lines)

    def response_body(self, data: bytes) -> bytes:
        if self._framing is _Framing.NONE or not data:
            return b""
        if self._framing is _Framing.CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def response_passthrough(self, part: Any) -> list[Any]:
        if self._framing is _Framing.NONE or not len(part):
            return []
        if self._framing is _Framing.CHUNKED:
            return [b"%x\r\n" % len(part), part, b"\r\n"]
        return [part]

    def response_end(self) -> bytes:
        chunked = self._framing is _Framing.CHUNKED
        self._ours = _State.DONE if self._keep_alive else _State.MUST_CLOSE
        return b"0\r\n\r\n" if chunked else b""

    def start_next_cycle(self) -> bool:
        if self._ours is not _State.DONE or self._theirs is not _State.DONE:
            return False
        self._theirs = self._ours = _State.IDLE
        self._head_end.reset(bytes(self._buffer))  # a pipelined head may be here already
        self._framing = _Framing.NONE
        self._expects_continue = False
        return True
