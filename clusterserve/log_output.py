"""Log output to a pipe or a socket that never blocks the process writing it.

journald, docker and a pager read a server's stdout and stderr through a
pipe or a socket, and a write to a full one waits until the reader reads.
The arbiter has one thread: a reader that stalls would stop it from
reaping, respawning and answering signals.  So lines go out with
``RWF_NOWAIT``; what the pipe cannot take now waits in a bounded buffer
and goes out at the next write or flush; past the bound, lines are
dropped and counted, and the first line that fits again is preceded by a
notice of how many were lost.

Files and terminals do not support ``RWF_NOWAIT`` (``EOPNOTSUPP``); they
get plain writes, as they do not stay blocked.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Callable
from typing import TextIO

# Bytes waiting for a blocked pipe before lines are dropped.
MAX_PENDING = 256 * 1024

_outputs: weakref.WeakSet[NonBlockingOutput] = weakref.WeakSet()


class NonBlockingOutput:
    """A text stream for ``logging.StreamHandler`` over another stream's descriptor.

    It writes to the descriptor number, not to a private copy, so a later
    ``dup2`` onto it (``capture_output``) is followed.
    """

    def __init__(self, stream: TextIO, drop_notice: Callable[[int], str],
                 max_pending: int = MAX_PENDING) -> None:
        """``drop_notice(count)`` is the line that reports ``count`` lost lines."""
        self._stream = stream
        self._max_pending = max_pending
        self._drop_notice = drop_notice
        self._pending = bytearray()
        self._dropped = 0
        self._nowait = hasattr(os, "RWF_NOWAIT")
        self._lock = threading.Lock()  # a worker's app threads log too
        _outputs.add(self)

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            if len(self._pending) + len(data) > self._max_pending:
                self._dropped += max(1, text.count("\n"))
                return len(text)
            if self._dropped:
                self._pending += self._drop_notice(self._dropped).encode("utf-8", "backslashreplace")
                self._dropped = 0
            self._pending += data
        return len(text)

    def flush(self) -> None:
        """Write what the descriptor takes now; the rest waits for the next flush."""
        with self._lock:
            while self._pending:
                try:
                    with memoryview(self._pending) as view:  # released: the buffer may be resized
                        written = self._write(view)
                except BlockingIOError:
                    return
                except OSError:  # the reader is gone (EPIPE), or the descriptor: nowhere to write
                    self._dropped += max(1, self._pending.count(b"\n"))
                    self._pending.clear()
                    return
                del self._pending[:written]

    def _write(self, data: memoryview) -> int:
        if self._nowait:
            try:
                return os.pwritev(self.fileno(), [data], -1, os.RWF_NOWAIT)
            except OSError as err:
                if err.errno != errno.EOPNOTSUPP:
                    raise
                self._nowait = False  # a file or a terminal
        return os.write(self.fileno(), data)


def flush_all() -> None:
    """Write out what waits for a pipe that was blocked (the arbiter calls this every tick)."""
    for output in list(_outputs):
        output.flush()
