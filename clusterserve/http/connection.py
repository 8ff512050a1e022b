"""One client connection: its socket and its HTTP codec (h11 or httptools).

A connection lives in two places in turn.  While it waits for a request
head it belongs to the worker's event loop, which reads without blocking
(``read_available`` / ``next_request``).  Once a head is complete it
belongs to one app thread, which reads the body (waiting at most
``io_timeout`` for the socket each time it would block) and writes the
response.

The response goes into an outbox (``queue``), which is written at once as
far as the socket takes it.  What does not fit waits there, and the
response goes no further, until the socket drains: the event loop owns
the connection meanwhile (``SENDING``) and writes the outbox as the
client reads, so a slow reader holds neither a thread nor the loop.
Writes that must be complete before the app goes on (``100 Continue``,
the ``write()`` callable, error responses) wait for the socket instead
(``drain``), at most ``io_timeout`` each time it takes nothing.

The socket stays non-blocking throughout: each read and write is tried
first, and waits only when the kernel says it would block.  (A socket
timeout would cost two ``ioctl`` calls per request to switch modes, and a
``poll`` before every read and write.)
"""

from __future__ import annotations

import enum
import os
import select
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from clusterserve.http.codec import END, NEED_DATA, Codec, Marker, RequestHead
from clusterserve.http.errors import HttpError
from clusterserve.http.head_checks import Framing, HeadEnd, check_head

RECV_SIZE = 65536
# What one write of a file slice reads, on TLS (where sendfile cannot be used).
SENDFILE_BLOCK = 65536
# What a limit of 0 stands for: gunicorn's ceilings (its MAX_REQUEST_LINE,
# DEFAULT_MAX_HEADERFIELD_SIZE and MAX_HEADERS), never "unbounded".
MAX_REQUEST_LINE = 8190
MAX_FIELD_SIZE = 8190
MAX_FIELDS = 32768
# The cap on a whole head when the number of fields is not limited.
MAX_HEAD = 1024 * 1024
# Headers with '_' that a trusted proxy sets on purpose (gunicorn's forwarder_headers
# default): never refused, the environ reads them itself.
FORWARDER_HEADERS = frozenset((b"SCRIPT_NAME",))


@dataclass(frozen=True)
class HeadLimits:
    """gunicorn's ``limit_request_*`` settings; 0 means gunicorn's ceiling, as there.

    ``body`` (``limit_request_body``) is the exception: 0 means no limit.
    ``refuse_underscores`` is ``header_map=refuse``.
    """

    line: int
    fields: int
    field_size: int
    body: int = 0
    refuse_underscores: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "line", self.line or MAX_REQUEST_LINE)
        object.__setattr__(self, "field_size", self.field_size or MAX_FIELD_SIZE)

    @property
    def max_head(self) -> int:
        if not self.fields:
            return MAX_HEAD
        return self.line + 2 + self.fields * self.field_size + 2

    def check(self, head: bytes, framing: Framing) -> bool:
        """Refuse a head over a limit; True if a field name has a '_' (``header_map``).

        ``head`` passed ``check_head`` (CRLF line ends only).  Sizes are counted on
        its bytes as gunicorn counts them: the request line without its CRLF, each
        field line with it.
        """
        lines = head.split(b"\r\n")
        if len(lines[0]) > self.line:
            raise HttpError(414, f"request line longer than {self.line} bytes")
        fields = lines[1:-2]  # the head ends with CRLF CRLF: two empty items
        if len(fields) > (self.fields or MAX_FIELDS):
            raise HttpError(431, f"more than {self.fields or MAX_FIELDS} header fields")
        underscores = False
        for line in fields:
            if len(line) + 2 > self.field_size:
                raise HttpError(431, f"header field larger than {self.field_size} bytes")
            if b"_" in line:
                name = line.partition(b":")[0]
                if b"_" in name:
                    underscores = True
                    if self.refuse_underscores and name.upper() not in FORWARDER_HEADERS:
                        raise HttpError(400, f"'_' in header name {name.decode('latin-1')!r} "
                                             "(header_map=refuse)")
        if self.body and framing.length is not None and framing.length > self.body:
            raise HttpError(413, f"body larger than {self.body} bytes")
        return underscores

    def refine(self, err: HttpError, pending: bytes) -> HttpError:
        """A head too large (a parser's 431) is a request line too long (414) if its first line is."""
        if err.status == 431:
            line_end = pending.find(b"\n")
            if line_end < 0 or line_end > self.line + 1:
                return HttpError(414, f"request line longer than {self.line} bytes")
        return err

    def check_body_size(self, received: int) -> None:
        """A chunked body has no length up front: refuse it once it outgrows the limit."""
        if self.body and received > self.body:
            raise HttpError(413, f"body larger than {self.body} bytes")


def error_parts(status: int, detail: str = "") -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a response that refuses a request and announces the close."""
    phrase = HTTPStatus(status).phrase
    body = f"{phrase}\n{detail}\n".encode("latin-1", "replace") if detail else f"{phrase}\n".encode()
    return [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close")], body


def error_response(status: int, detail: str = "") -> bytes:
    """The refusal as bytes on the wire."""
    headers, body = error_parts(status, detail)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode("latin-1"))]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n" + body


class Phase(enum.Enum):
    WAITING_FOR_HEAD = "waiting for head"  # owned by the event loop
    IN_APP = "in app"  # owned by an app thread
    SENDING = "sending"  # owned by the event loop, which writes the outbox as the socket drains
    CLOSED = "closed"


class FileSlice:
    """``count`` bytes of an open file from ``offset``: a response body part written with
    ``sendfile``, never read into memory."""

    def __init__(self, file: Any, offset: int, count: int) -> None:
        self.file, self.offset, self.count = file, offset, count
        self.fileno = file.fileno()

    def __len__(self) -> int:
        return self.count

    def advance(self, sent: int) -> None:
        self.offset += sent
        self.count -= sent


class HttpConnection:
    def __init__(self, sock: socket.socket, peer: Any, limits: HeadLimits, io_timeout: float,
                 codec: type[Codec]) -> None:
        self.sock = sock
        self.peer = peer
        self.limits = limits
        self.io_timeout = io_timeout
        self.codec = codec(limits.max_head)
        self.phase = Phase.WAITING_FOR_HEAD
        self.received_any = False  # bytes of the current request have arrived
        self.quiet_since = time.monotonic()  # when the client last sent bytes (or connected)
        self.served = 0  # requests answered on this connection
        self.app_started = 0.0  # when the current request went to an app thread
        self._held = bytearray()
        self._outbox: deque[memoryview | FileSlice] = deque()  # response bytes the socket has not taken
        self.waits_for_read = False  # TLS: the outbox waits for the peer's bytes, not for room
        self._local_address: Any = None
        self.deadline = 0.0
        self.head_end = HeadEnd()
        self.body_received = 0  # bytes of the current request's body so far

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- event loop side: never blocks --------------------------------

    def read_available(self) -> None:
        """Read what the socket has now into the codec (end of file included)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        self.receive(data)

    def receive(self, data: bytes) -> None:
        """Bytes of the request stream (b"": its end), read here or before (a PROXY header's reader)."""
        if data:
            self.received_any = True
            self.quiet_since = time.monotonic()
            self.head_end.feed(data)
        self.codec.receive(data)

    def next_request(self) -> RequestHead | None:
        """The complete request head if there is one; None if more bytes are needed.

        Raises ``HttpError`` for a malformed or over-limit head and
        ``ConnectionResetError`` when the client closed an idle connection.
        """
        if self.head_end.end >= 0 and self.codec.awaiting_head:
            head = self.codec.pending[:self.head_end.end]
            self.limits.check(head, check_head(head))
        try:
            request = self.codec.next_head()
        except HttpError as err:
            raise self.limits.refine(err, self.codec.pending) from None
        if request is None:
            return None
        self.body_received = 0
        self.head_end.reset(b"")
        return request

    # -- app thread side: blocking, bounded by io_timeout ---------------

    def start_blocking(self) -> None:
        """A complete head: an app thread owns the connection now."""
        self.phase = Phase.IN_APP
        self.app_started = time.monotonic()

    def wait_to_send(self, deadline: float) -> None:
        """The response waits for the socket to drain: the event loop owns the connection."""
        self.phase = Phase.SENDING
        self.deadline = deadline

    def back_to_loop(self) -> None:
        """After a response: the event loop owns the connection again."""
        self.served += 1
        self.phase = Phase.WAITING_FOR_HEAD
        pending = self.codec.pending  # a pipelined request, maybe
        self.received_any = bool(pending)
        self.head_end.reset(pending)

    def next_body(self) -> bytes | Literal[Marker.END]:
        """The next body bytes or ``END``, reading from the socket as needed."""
        while True:
            data = self.codec.next_body()
            if data is END:
                return END
            if data is not NEED_DATA:
                self.body_received += len(data)
                self.limits.check_body_size(self.body_received)
                return data
            try:
                received = self._recv_waiting()
            except TimeoutError:
                raise HttpError(408, f"no request body bytes for {self.io_timeout:g}s") from None
            except OSError:
                received = b""
            self.codec.receive(received)

    # -- the response side: an outbox the socket drains -----------------

    def hold(self, data: bytes) -> None:
        """Keep bytes to go out with the next ones queued (a response head with its first
        body bytes: one send, one packet)."""
        self._held += data

    def queue(self, data: bytes | FileSlice) -> None:
        """Add response bytes (or a slice of a file) to the outbox and write what the
        socket takes now, without waiting; ``unsent`` then tells whether some is left.
        Raises ``OSError`` if the client is gone.
        """
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            if isinstance(data, FileSlice):
                self._outbox.append(memoryview(held))
            else:
                data = held + data
        if data:
            self._outbox.append(data if isinstance(data, FileSlice) else memoryview(data))
            self.write_some()

    @property
    def unsent(self) -> bool:
        """Response bytes wait in the outbox for the socket to take them."""
        return bool(self._outbox)

    def write_some(self) -> int:
        """Write from the outbox what the socket takes now; return how many bytes that was.
        Raises ``OSError`` if the client is gone."""
        written = 0
        while self._outbox:
            item = self._outbox[0]
            try:
                sent = self._send_file_now(item) if isinstance(item, FileSlice) else self._send_now(item)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self.waits_for_read = False
                break
            except ssl.SSLWantReadError:  # TLS renegotiation wants the peer first
                self.waits_for_read = True
                break
            written += sent
            if isinstance(item, FileSlice):
                item.advance(sent)
                if item.count:
                    continue
            elif sent < len(item):
                self._outbox[0] = item[sent:]
                continue
            self._outbox.popleft()
        return written

    def _send_now(self, data: bytes | memoryview) -> int:
        return self.sock.send(data)

    def _send_file_now(self, part: FileSlice) -> int:
        """Part of a file, with ``sendfile`` (read and sent through the TLS layer, on TLS)."""
        if isinstance(self.sock, ssl.SSLSocket):
            sent = self.sock.send(os.pread(part.fileno, min(part.count, SENDFILE_BLOCK), part.offset))
        else:
            sent = os.sendfile(self.sock.fileno(), part.fileno, part.offset, part.count)
        if not sent:
            raise BrokenPipeError(f"the file ended {part.count} bytes early")
        return sent

    def drain(self) -> None:
        """Wait until the outbox is empty, at most ``io_timeout`` each time the socket takes
        nothing (``TimeoutError``: the client stopped reading)."""
        self.write_some()
        while self._outbox:
            self._wait(select.POLLIN if self.waits_for_read else select.POLLOUT)
            self.write_some()

    def send(self, data: bytes) -> None:
        """Write bytes outside a response body (``100 Continue``), waiting as ``drain`` does."""
        self.queue(data)
        self.drain()

    def _recv_waiting(self) -> bytes:
        """Read what arrives, waiting up to ``io_timeout`` for it."""
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                self._wait(select.POLLIN)
            except ssl.SSLWantWriteError:
                self._wait(select.POLLOUT)

    def _wait(self, events: int) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        if not poller.poll(self.io_timeout * 1000):
            raise TimeoutError(f"socket not ready within {self.io_timeout:g}s")

    def get_local_address(self) -> Any:
        """The address the client connected to (asked of the kernel once per connection)."""
        if self._local_address is None:
            self._local_address = self.sock.getsockname()
        return self._local_address

    def send_raw(self, data: bytes) -> None:
        """Best-effort write of bytes outside the codec (error responses)."""
        try:
            self.send(data)
        except OSError:
            pass

    def close(self, *, handed_back: bool = False) -> None:
        """End the connection; one ``handed_back`` to the arbiter only loses this copy."""
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._outbox.clear()
        if handed_back:
            self.sock.close()  # no shutdown: that would end it for the next worker too
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
            # Unread bytes at close make the kernel send a reset, which can
            # destroy the response before the client reads it: drop them.
            for _ in range(16):
                if not self.sock.recv(RECV_SIZE):
                    break
        except OSError:
            pass
        self.sock.close()
