"""The WSGI response side: ``start_response``, ``write()``, ``wsgi.file_wrapper``."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import h11

from clusterserve.http.connection import HttpConnection

SERVER_HEADER = (b"server", b"clusterserve")


class ClientGone(Exception):
    """The client closed the connection or stopped reading; not the app's fault."""


class _DateCache:
    """The Date header, formatted once per second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.value = formatdate(second, usegmt=True).encode("ascii")
            cls.second = second
        return cls.value


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


class _FileSlice:
    """A body chunk that h11 frames without copying; written with sendfile."""

    def __init__(self, file: Any, offset: int, count: int) -> None:
        self.file, self.offset, self.count = file, offset, count

    def __len__(self) -> int:
        return self.count


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    encoded = []
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
        encoded.append((name.encode("latin-1"), value.encode("latin-1")))
    return encoded


class Response:
    """One response, written through h11 on the connection's socket."""

    def __init__(self, connection: HttpConnection, request: h11.Request,
                 keep_alive: Callable[[], bool]) -> None:
        self._connection = connection
        self._keep_alive = keep_alive
        self._is_head = request.method == b"HEAD"
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
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError(f"status must be a str like '200 OK', got {status!r}")
        self.status = status
        self.headers = list(headers)
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
        headers = _encode_headers(self.headers)
        if not self._has_header("date"):
            headers.append((b"date", _DateCache.now()))
        if not self._has_header("server"):
            headers.append(SERVER_HEADER)
        if not self._keep_alive():
            headers.append((b"connection", b"close"))
        event = h11.Response(status_code=int(self.status[:3]), reason=self.status[4:].encode("latin-1"),
                             headers=headers)
        self.headers_sent = True
        self._send(event, hold=True)

    def _send(self, event: Any, hold: bool = False) -> None:
        try:
            self._connection.send(event, hold=hold)
        except OSError as err:
            raise ClientGone(str(err)) from None

    def write(self, data: bytes) -> None:
        """The ``write()`` callable, also used for each chunk of the iterable."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"response body chunks must be bytes, got {type(data).__name__}")
        if not self.headers_sent:
            self._send_head()
        if data and not self._is_head:
            self._send(h11.Data(data=data))
            self.body_bytes += len(data)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a file wrapper's file with sendfile; False if it cannot be."""
        file_range = wrapper.file_range()
        if file_range is None:
            return False
        offset, count = file_range
        for name, value in self.headers:
            if name.lower() == "content-length" and value.strip().isdigit():
                count = min(count, int(value))
                break
        else:
            self.headers.append(("Content-Length", str(count)))
        self._send_head()
        if self._is_head or count == 0:
            return True
        conn = self._connection
        parts = conn.h11.send_with_data_passthrough(h11.Data(data=_FileSlice(wrapper.filelike, offset, count)))
        try:
            conn.flush()  # the held head goes first
            for part in parts or ():
                if isinstance(part, _FileSlice):
                    conn.sock.sendfile(part.file, part.offset, part.count)
                else:
                    conn.sock.sendall(part)
        except OSError as err:
            raise ClientGone(str(err)) from None
        self.body_bytes += count
        return True

    def finish(self) -> None:
        if not self.headers_sent:
            self._send_head()
        self._send(h11.EndOfMessage())
