"""Operating-system helpers for arbiter and worker processes."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal

PR_SET_PDEATHSIG = 1
# The C library the interpreter runs on, opened once in the arbiter: finding it by
# name (ctypes.util.find_library) runs ldconfig and cost each new worker 1.2 MiB.
_LIBC = ctypes.CDLL(None, use_errno=True)


def set_title(title: str) -> None:
    """Set the process title if the optional setproctitle package is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` when the parent dies (a backstop to channel EOF).

    It fires when the forking *thread* exits and is cleared by setuid, so
    call it after dropping privileges, in a child forked from the main thread.
    """
    try:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except AttributeError:  # not Linux
        return


def resolve_user(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"no such user: {user!r}") from None


def resolve_group(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """Switch to ``gid`` then ``uid`` (group first, while still allowed)."""
    if gid is not None and gid != os.getegid():
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None and uid != os.geteuid():
        if gid is None:
            os.initgroups(pwd.getpwuid(uid).pw_name, os.getgid())
        os.setuid(uid)


def resident_bytes(pid: int) -> int | None:
    """A process's resident set size (VmRSS), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
