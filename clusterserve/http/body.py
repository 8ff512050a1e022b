"""``wsgi.input``: the request body, streamed from the socket as the app reads."""

from __future__ import annotations

from collections.abc import Iterator

from clusterserve.http.codec import END
from clusterserve.http.connection import HttpConnection


class RequestBody:
    """A file-like reader over the body of one request, as the codec decodes it.

    The first read answers ``Expect: 100-continue``; reads return b"" at
    the end of the body, so ``wsgi.input_terminated`` holds.
    """

    def __init__(self, connection: HttpConnection) -> None:
        self._connection = connection
        self._buffer = bytearray()
        self._finished = False
        self._asked_to_continue = connection.codec.expects_continue
        self._read_started = False

    @property
    def finished(self) -> bool:
        return self._finished and not self._buffer

    @property
    def withheld(self) -> bool:
        """The client waits for ``100 Continue`` before it sends the body, and never got it."""
        return self._asked_to_continue and not self._read_started

    def _fill(self) -> bool:
        """Read the next body chunk into the buffer; False at the end."""
        if self._finished:
            return False
        conn = self._connection
        self._read_started = True
        if conn.codec.expects_continue:
            conn.send(conn.codec.continue_response())
        data = conn.next_body()
        if data is END:
            self._finished = True
            return False
        self._buffer += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(self._buffer)
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = None if size is None or size < 0 else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                end += 1
                break
            if limit is not None and len(self._buffer) >= limit:
                end = limit
                break
            if not self._fill():
                end = len(self._buffer)
                break
        if limit is not None:
            end = min(end, limit)
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def discard(self, limit: int) -> bool:
        """Read and drop up to ``limit`` bytes of unread body; True if it ended."""
        self._buffer.clear()
        seen = 0
        while seen <= limit:
            if not self._fill():
                return True
            seen += len(self._buffer)
            self._buffer.clear()
        return False
