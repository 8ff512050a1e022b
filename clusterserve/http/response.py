"""The WSGI response side: ``start_response``, ``write()``, ``wsgi.file_wrapper``."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any

from clusterserve.http.codec import RequestHead
from clusterserve.http.connection import FileSlice, HttpConnection
from clusterserve.http.response_headers import SERVER_HEADER, check_status, clean_header, http_date

# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to the connection this
# server manages, not to the app: dropped from its response, as gunicorn does.
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"))
BODILESS_STATUSES = (204, 304)


class ClientGone(Exception):
    """The client closed the connection or stopped reading; not the app's fault."""


class LengthMismatch(Exception):
    """The app sent a body shorter or longer than its Content-Length."""


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks, or is sent with sendfile."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Any:
        while True:
            block = self.filelike.read(self.blksize)
            if not block:
                return
            yield block

    def file_range(self) -> tuple[int, int] | None:
        """(offset, remaining bytes) when the file can go out with sendfile."""
        try:
            fd = self.filelike.fileno()
            info = os.fstat(fd)
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode) or "b" not in getattr(self.filelike, "mode", "b"):
            return None
        return offset, max(0, info.st_size - offset)




def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class Response:
    """One response, framed by the connection's codec and written on its socket."""

    def __init__(self, connection: HttpConnection, request: RequestHead,
                 keep_alive: Callable[[], bool], *, server_header: bool = True,
                 date_header: bool = True) -> None:
        self._connection = connection
        self._keep_alive = keep_alive
        self._is_head = request.method == b"HEAD"
        self._server_header = server_header
        self._date_header = date_header
        self._close_asked = False  # the app sent Connection: close
        self._length: int | None = None  # the app's Content-Length
        self._bodiless = self._is_head
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.body_bytes = 0

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        check_status(status)
        kept = []
        lengths = 0
        for name, value in headers:
            value = clean_header(name, value)
            lower = name.lower()
            if lower in HOP_BY_HOP:
                self._close_asked |= lower == "connection" and "close" in value.lower()
                continue
            if lower == "content-length":
                lengths += 1
                if not value.isdigit() or lengths > 1:
                    raise ValueError(f"one Content-Length of digits only, got {value!r}")
            kept.append((name, value))
        self.status = status
        self.headers = kept
        return self.write

    @property
    def status_code(self) -> int | None:
        """As gunicorn's response has it, for post_request hooks."""
        return int(self.status[:3]) if self.status else None

    def _has_header(self, name: str) -> bool:
        return any(n.lower() == name for n, _ in self.headers)

    def _send_head(self) -> None:
        if self.status is None:
            raise AssertionError("the app returned without calling start_response()")
        code = int(self.status[:3])
        self._bodiless = self._is_head or code in BODILESS_STATUSES
        for name, value in self.headers:
            if name.lower() == "content-length":
                self._length = 0 if self._bodiless else int(value)
        headers = _encode_headers(self.headers)
        if self._date_header and not self._has_header("date"):
            headers.append((b"date", http_date(time.time())))
        if self._server_header and not self._has_header("server"):
            headers.append(SERVER_HEADER)
        if self._close_asked or not self._keep_alive():
            headers.append((b"connection", b"close"))
        head = self._connection.codec.response_head(code, self.status[4:].encode("latin-1"), headers)
        self.headers_sent = True
        self._connection.hold(head)  # goes out with the first body bytes

    def _send(self, data: bytes | FileSlice) -> None:
        """Into the connection's outbox, which the socket drains (see ``put``)."""
        try:
            self._connection.queue(data)
        except OSError as err:
            raise ClientGone(str(err)) from None

    def _drain(self) -> None:
        try:
            self._connection.drain()
        except OSError as err:
            raise ClientGone(str(err)) from None

    def write(self, data: bytes) -> None:
        """The ``write()`` callable: returns once the bytes are in the kernel's hands."""
        self.put(data)
        self._drain()

    def put(self, data: bytes) -> None:
        """A body chunk (of the app's iterable): written as far as the socket takes it now;
        the connection's ``unsent`` tells whether the rest waits for the socket to drain."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"response body chunks must be bytes, got {type(data).__name__}")
        if not self.headers_sent:
            self._send_head()
        if not data or self._bodiless:
            return
        if self._length is not None and self.body_bytes + len(data) > self._length:
            fits = self._length - self.body_bytes
            if fits:
                self._send(self._connection.codec.response_body(data[:fits]))
                self.body_bytes += fits
                self._drain()  # the part that fits goes out before the connection closes
            raise LengthMismatch(f"the app sent more than its Content-Length of {self._length} bytes")
        self._send(self._connection.codec.response_body(data))
        self.body_bytes += len(data)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Queue a file wrapper's file, to go out with sendfile; False if it cannot."""
        file_range = wrapper.file_range()
        if file_range is None:
            return False
        offset, count = file_range
        for name, value in self.headers:
            if name.lower() == "content-length":
                count = min(count, int(value))
                break
        else:
            self.headers.append(("Content-Length", str(count)))
        self._send_head()
        if self._bodiless or count == 0:
            return True
        codec = self._connection.codec
        for part in codec.response_passthrough(FileSlice(wrapper.filelike, offset, count)):
            self._send(part)
        self.body_bytes += count
        return True

    def finish(self) -> None:
        """End the response (queued as ``put`` does)."""
        if not self.headers_sent:
            self._send_head()
        if self._length is not None and self.body_bytes < self._length:
            raise LengthMismatch(f"the app sent {self.body_bytes} of the {self._length} bytes "
                                 "its Content-Length announced")
        self._send(self._connection.codec.response_end())
