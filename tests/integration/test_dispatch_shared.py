"""``shared`` dispatch: one socket, every worker waits on it with EPOLLEXCLUSIVE."""

import os
import re
import select

import pytest

from tests.harness import running

pytestmark = pytest.mark.http_path

EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    marker = tmp_path_factory.mktemp("imports") / "pids"
    with running(["tests.apps.preload_marker:app", "-w", "2"], workers=2,
                 env={"IMPORT_MARKER": str(marker)}) as server:
        server.marker = marker
        yield server


def epoll_watches(pid):
    """{target fd: event mask} for every epoll instance of process ``pid``."""
    watches = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for target, mask in re.findall(r"tfd:\s+(\d+) events:\s+([0-9a-f]+)", info):
            watches[int(target)] = int(mask, 16)
    return watches


def socket_fds(pid, inode):
    return [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"]


def listening_inode(port):
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A = LISTEN
            return fields[9]
    raise AssertionError(f"no listening socket on port {port}")


def test_each_worker_waits_on_the_listener_with_epollexclusive(server):
    inode = listening_inode(server.port)
    for pid in server.workers():
        (listener_fd,) = socket_fds(pid, inode)
        mask = epoll_watches(pid).get(listener_fd)
        assert mask is not None, f"worker {pid} does not watch the listener"
        assert mask & EPOLLEXCLUSIVE and mask & select.EPOLLIN


def test_the_arbiter_holds_the_listener_and_has_one_thread(server):
    assert socket_fds(server.pid, listening_inode(server.port))
    threads = next(line for line in open(f"/proc/{server.pid}/status") if line.startswith("Threads:"))
    assert threads.split() == ["Threads:", "1"]


def test_only_workers_import_the_app(server):
    importers = {int(pid) for pid in server.marker.read_text().split()}
    assert server.pid not in importers
    assert importers == set(server.workers())
