"""The process's open-file limit (``RLIMIT_NOFILE``, as ``ulimit -n``): raising it
(``rlimit_nofile``), and how many connections fit under it.

Every connection costs a descriptor in the process that holds it (in
``round-robin`` mode, in the arbiter too until a worker takes it).  A
process that runs out cannot accept, and a worker that cannot receive a
passed descriptor loses it; so workers and the arbiter hold at most what
their limit leaves after ``RESERVE``, and make room by shedding idle
connections instead.
"""

from __future__ import annotations

import os
import resource

from clusterserve.logs import log

# Descriptors kept free beside the connections: the app's files and database
# connections, log files being reopened, a connection accepted before one is shed.
RESERVE = 64
# What an unlimited soft limit counts as.
UNLIMITED = 1 << 20
NR_OPEN = "/proc/sys/fs/nr_open"  # Linux: the most any hard limit can be


def soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def in_use() -> int:
    """Descriptors open in this process now."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # less the one listdir opened
        except OSError:
            continue
    return 0


def connection_cap(wanted: int) -> int:
    """``wanted``, or fewer if this process's open-file limit leaves less room (at least 1)."""
    return max(1, min(wanted, soft_limit() - in_use() - RESERVE))


def worker_connection_cap(worker_connections: int, pid: int) -> int:
    """A worker's ``connection_cap``, said in the log when the limit lowers it."""
    cap = connection_cap(worker_connections)
    if cap < worker_connections:
        log.info("worker %s holds at most %d connections: the open-file limit is %d "
                 "(see rlimit_nofile)", pid, cap, soft_limit())
    return cap


def why_not_raisable(target: int) -> str | None:
    """Why the soft limit cannot be raised to ``target`` by this process, or None."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or target <= hard:
        return None
    if os.geteuid() != 0:
        return f"above the hard limit of {hard} open files, which only root can raise"
    try:
        with open(NR_OPEN, encoding="ascii") as stream:
            ceiling = int(stream.read())
    except (OSError, ValueError):
        return None
    if target > ceiling:
        return f"above the system's ceiling of {ceiling} open files ({NR_OPEN})"
    return None


def raise_limit(target: int) -> None:
    """Raise the soft limit to at least ``target`` (and the hard one with it, as root);
    never lower it.  Raises ``OSError`` or ``ValueError`` when the system refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or target <= soft:
        return
    if hard != resource.RLIM_INFINITY:
        hard = max(hard, target)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
