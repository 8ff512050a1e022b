"""Listening sockets: parsing bind addresses, binding them, inherited fds.

The arbiter binds every address once, before it forks, so that a bind
error is reported in one line and nothing is forked.  Sockets handed over
by systemd (``LISTEN_FDS``) or by number (``fd://N``) are adopted as is.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from clusterserve.logs import Throttled

SYSTEMD_FIRST_FD = 3
Accepted = TypeVar("Accepted")


# accept() failures for want of a resource: the connection stays queued and the
# listener readable, so the caller must stop watching it for a while, not spin.
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# How long an accept loop leaves a listener alone after such a failure (nginx: 0.5 s).
ACCEPT_BACKOFF = 0.25
_accept_failures = Throttled()


class OutOfDescriptors(OSError):
    """accept() failed for want of descriptors (or memory): back off for ACCEPT_BACKOFF."""


def accept_until_empty(accept: Callable[[], Accepted]) -> Iterator[Accepted]:
    """Call a non-blocking listener's ``accept`` (or ``_accept``) as the caller asks,
    until its queue is empty: one policy for every dispatch mode's accept loop.

    Raises ``OutOfDescriptors`` when the process (or the system) is out of
    descriptors, after a warning that is logged at most every few seconds.
    """
    while True:
        try:
            accepted = accept()
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionAbortedError:
            continue  # that client gave up while queued; the next may not have
        except OSError as err:
            if err.errno in OUT_OF_RESOURCES:
                _accept_failures.warning("accept failed: %s; not accepting for %gs", err, ACCEPT_BACKOFF)
                raise OutOfDescriptors(err.errno, err.strerror) from None
            _accept_failures.warning("accept failed: %s", err)
            return
        yield accepted


class BindError(Exception):
    """A listening socket could not be created; the message names the address."""


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class FdAddress:
    fd: int

    def __str__(self) -> str:
        return f"fd://{self.fd}"


Address = TcpAddress | UnixAddress | FdAddress


def parse_address(text: str) -> Address:
    """Parse a gunicorn-style bind: ``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``, ``fd://N``."""
    raw = text.strip()
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"unix socket address without a path: {text!r}")
        return UnixAddress(path)
    if raw.startswith("fd://"):
        number = raw[len("fd://") :]
        if not number.isdigit():
            raise ValueError(f"expected fd://N with a number, got {text!r}")
        return FdAddress(int(number))
    if "://" in raw:
        raise ValueError(f"expected HOST:PORT, unix:PATH or fd://N, not a URL: {text!r}")
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"unclosed '[' in IPv6 address {text!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected [HOST]:PORT, got {text!r}")
        port_text = rest[1:] if rest else "8000"
    elif raw.count(":") > 1:
        raise ValueError(f"IPv6 addresses need brackets, as in [::1]:8000; got {text!r}")
    else:
        host, _, port_text = raw.rpartition(":")
        if not _:
            host, port_text = raw, "8000"
        host = host or "0.0.0.0"
    if not host:
        raise ValueError(f"empty host in {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r} in {text!r}")
    return TcpAddress(host, int(port_text))


@dataclass
class Listener:
    """A bound, listening socket and the address it was asked for."""

    sock: socket.socket
    address: Address

    @property
    def url(self) -> str:
        """Where it actually listens (the real port when port 0 was asked for)."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Close the socket; remove the file of a unix socket we created."""
        self.sock.close()
        if isinstance(self.address, UnixAddress):
            try:
                os.unlink(self.address.path)
            except OSError:
                pass


def _describe(err: OSError) -> str:
    if err.errno == errno.EADDRINUSE:
        return "address already in use"
    if err.errno == errno.EACCES:
        return "permission denied"
    if err.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return err.strerror or str(err)


def _bind_tcp(address: TcpAddress, backlog: int, reuse_port: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise BindError(f"cannot bind {address}: cannot resolve host ({err.strerror})") from None
    # A name such as "localhost" may resolve to both families; bind the first
    # one, as gunicorn does, so the port is unambiguous.
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        raise BindError(f"cannot bind {address}: {_describe(err)}") from None
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot bind unix:{path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise BindError(f"cannot bind unix:{path}: another server is listening on it")


def _bind_unix(address: UnixAddress, backlog: int) -> socket.socket:
    _remove_stale_unix_socket(address.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address.path)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        raise BindError(f"cannot bind {address}: {_describe(err)}") from None
    return sock


def _adopt_fd(fd: int, label: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as err:
        raise BindError(f"cannot use {label}: {_describe(err)}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"cannot use {label}: not a stream socket")
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def systemd_fds() -> list[tuple[int, str]]:
    """Descriptors passed by systemd socket activation (or a USR2 predecessor), meant for
    this process, each with its name from ``LISTEN_FDNAMES`` ("" when unnamed)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)
    return [(fd, names[index] if index < len(names) else "")
            for index, fd in enumerate(range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + count))]


def adopt_inherited() -> list[tuple[Listener, str]]:
    """The inherited listening sockets, if any, with their names."""
    return [(Listener(_adopt_fd(fd, f"inherited socket fd {fd}"), FdAddress(fd)), name)
            for fd, name in systemd_fds()]


def bind_all(addresses: list[Address], backlog: int, reuse_port: bool = False) -> list[Listener]:
    """Bind every address, or close what was bound and raise ``BindError``;
    ``reuse_port`` sets ``SO_REUSEPORT`` on TCP sockets (gunicorn's reuse_port)."""
    listeners: list[Listener] = []
    try:
        inherited = adopt_inherited()
        if inherited:
            return [listener for listener, _ in inherited]
        for address in addresses:
            listeners.append(bind_address(address, backlog, reuse_port))
    except BindError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def bind_address(address: Address, backlog: int, reuse_port: bool = False) -> Listener:
    """Bind (or, for ``fd://N``, adopt) one address; raise ``BindError``."""
    if isinstance(address, TcpAddress):
        return Listener(_bind_tcp(address, backlog, reuse_port=reuse_port), address)
    if isinstance(address, UnixAddress):
        return Listener(_bind_unix(address, backlog), address)
    return Listener(_adopt_fd(address.fd, str(address)), address)


def bind_reuseport(address: TcpAddress, backlog: int) -> Listener:
    """One more ``SO_REUSEPORT`` socket on ``address`` (whose port must be fixed)."""
    return Listener(_bind_tcp(address, backlog, reuse_port=True), address)
