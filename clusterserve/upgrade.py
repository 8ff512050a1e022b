"""USR2: replace the arbiter itself (new code, new Python) without closing a socket.

The old arbiter forks and execs the same command line; the new process
inherits the listening sockets as systemd would pass them (``LISTEN_FDS``
from fd 3, ``LISTEN_PID``) and the write end of a pipe
(``CLUSTERSERVE_UPGRADE_FD``), on which it says ``ready`` once its first
generation of workers is ready.  Then the old arbiter stops its workers and
waits for TERM, as gunicorn's does.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clusterserve import signals
from clusterserve.sockets import SYSTEMD_FIRST_FD, Listener

READY_FD_VARIABLE = "CLUSTERSERVE_UPGRADE_FD"
READY = b"ready"
# Descriptors are first moved this high so that moving them down to 3, 4, ...
# cannot overwrite one not moved yet.
SCRATCH_FD = 100


@dataclass
class Successor:
    pid: int
    ready_pipe: int  # read end


def start_successor(listeners: Sequence[tuple[Listener, str]], argv: Sequence[str], directory: str,
                    before_exec: Callable[[], None]) -> Successor:
    """Fork and exec a new arbiter that inherits ``listeners`` (each with a name)."""
    read_end, write_end = os.pipe()
    pid = signals.fork_with_signals_held()
    if pid == 0:
        try:
            signals.reset_to_defaults()
            signals.release()  # exec keeps the signal mask: the new arbiter needs them
            before_exec()
            inherited = [listener.sock.fileno() for listener, _ in listeners] + [write_end]
            scratch = [fcntl.fcntl(fd, fcntl.F_DUPFD, SCRATCH_FD) for fd in inherited]
            for index, fd in enumerate(scratch):
                os.dup2(fd, SYSTEMD_FIRST_FD + index)  # dup2 makes the target inheritable
            env = dict(os.environ, LISTEN_FDS=str(len(listeners)), LISTEN_PID=str(os.getpid()))
            env[READY_FD_VARIABLE] = str(SYSTEMD_FIRST_FD + len(listeners))
            env["LISTEN_FDNAMES"] = ":".join(name for _, name in listeners)
            os.chdir(directory)
            os.execve(sys.executable, [sys.executable, "-m", "clusterserve", *argv], env)
        finally:
            os._exit(127)  # only reached if exec failed
    os.close(write_end)
    return Successor(pid, read_end)


def is_successor() -> bool:
    """Whether this process is a new arbiter started by USR2."""
    return READY_FD_VARIABLE in os.environ


def take_ready_pipe() -> int | None:
    """In a new arbiter: the pipe on which to tell its predecessor it is ready."""
    value = os.environ.pop(READY_FD_VARIABLE, None)
    return int(value) if value and value.isdigit() else None


def tell_ready(fd: int) -> None:
    try:
        os.write(fd, READY)
    except OSError:
        pass  # the old arbiter is gone already
    finally:
        os.close(fd)
