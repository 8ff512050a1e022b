"""``daemon``: detach into the background as gunicorn's ``-D`` does, but tell the
command that started the server how the start went.

The command forks, the child starts a new session and forks again (so the
daemon can never get a controlling terminal), and the daemon goes on to
start the server.  The command waits on a pipe: ``ready`` once the sockets
are bound and the first workers are ready (it exits 0), or ``exit N`` if
the start failed (it exits N).  Until then the daemon's errors also go to
the command's stderr, which stays open for that alone; the daemon's own
stdin, stdout and stderr point at /dev/null (unless stdio inheritance is
asked for), as gunicorn's do.
"""

from __future__ import annotations

import logging
import os
import sys

from clusterserve.logs import log

READY = b"ready\n"
EXITED = b"exit "


class Detached:
    """In the daemon: the way back to the command that started it, until the server is
    ready or has failed to start."""

    def __init__(self, pipe: int, report: int) -> None:
        self.pipe: int | None = pipe
        self.report = report
        self.handler = _ReportHandler(report)

    def copy_errors(self) -> None:
        """From now until ready, errors logged also go to the command's stderr
        (called once logging is set up, which would remove the handler)."""
        log.addHandler(self.handler)

    def ready(self) -> None:
        """The server serves: the command exits 0."""
        self._tell(READY)

    def exited(self, code: int) -> None:
        """The server stops before it was ready: the command exits with ``code``."""
        self._tell(EXITED + f"{code}\n".encode())

    def report_error(self, message: str) -> None:
        """An error the command's user should see (before logging is set up)."""
        if self.pipe is not None:
            _write(self.report, f"clusterserve: error: {message}\n".encode())

    def close_in_child(self) -> None:
        """In a worker or another child: neither descriptor is its to keep open."""
        for fd in (self.pipe, self.report):
            if fd is not None:
                _close(fd)

    def _tell(self, word: bytes) -> None:
        if self.pipe is None:
            return
        log.removeHandler(self.handler)
        _write(self.pipe, word)
        _close(self.pipe)
        _close(self.report)
        self.pipe = None


class _ReportHandler(logging.Handler):
    """Errors logged before the server is ready, copied to the command's stderr."""

    def __init__(self, fd: int) -> None:
        super().__init__(logging.ERROR)
        self.fd = fd
        self.setFormatter(logging.Formatter("clusterserve: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        _write(self.fd, (self.format(record) + "\n").encode(errors="replace"))


def detach(keep_stdio: bool) -> Detached:
    """Become a daemon; only the daemon returns.  The calling process waits for its
    word and exits with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    report = os.dup(2)
    intermediate = os.fork()
    if intermediate:
        os.close(write_end)
        os.close(report)
        os.waitpid(intermediate, 0)
        os._exit(_await_word(read_end))
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    if not keep_stdio:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    return Detached(write_end, report)


def _await_word(fd: int) -> int:
    """In the starting command: the exit code the daemon's word means."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if data == READY:
        return 0
    if data.startswith(EXITED) and data[len(EXITED):].strip().isdigit():
        return int(data[len(EXITED):]) or 1
    os.write(2, b"clusterserve: error: the server stopped before it was ready\n")
    return 1


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass  # the command is gone (killed while waiting): nothing to tell


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
