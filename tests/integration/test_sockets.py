"""Listening sockets: several binds, IPv6, unix sockets, fd://N, systemd activation."""

import http.client
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

from tests.harness import LISTENING, ROOT, wait_until


def get_over(sock_factory):
    """GET / over a connected socket; return the response body."""
    sock = sock_factory()
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request("GET", "/")
    body = conn.getresponse().read()
    conn.close()
    return body


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback here")
def test_several_binds_ipv4_ipv6_and_unix(start_server, tmp_path):
    path = tmp_path / "app.sock"
    server = start_server(["tests.apps.basic:app", "-w", "2", "-b", "[::1]:0", "-b", f"unix:{path}"],
                          workers=2)
    ports = {host: int(port) for host, port in LISTENING.findall(server.log()) if host}
    assert set(ports) == {"[::1]", "127.0.0.1"}
    assert get_over(lambda: socket.create_connection(("127.0.0.1", ports["127.0.0.1"]), 5)).startswith(b"hello")
    assert get_over(lambda: socket.create_connection(("::1", ports["[::1]"]), 5)).startswith(b"hello")

    def unix_connect():
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        return sock

    assert get_over(unix_connect).startswith(b"hello")
    assert server.stop() == 0
    assert not path.exists()  # the arbiter removes the socket file it made


def test_umask_applies_to_the_unix_socket(start_server, tmp_path):
    path = tmp_path / "app.sock"
    start_server(["tests.apps.basic:app", "-w", "1", "-m", "0o077"], workers=1, bind=f"unix:{path}")
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_stale_unix_socket_file_is_replaced(start_server, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    server = start_server(["tests.apps.basic:app", "-w", "1"], workers=1, bind=f"unix:{path}")
    assert "Listening at: unix:" in server.log()


# Runs in a small wrapper process that then execs clusterserve with the same
# pid, as systemd or a supervisor would: argv[1] is the inherited fd.
EXEC_WITH_SOCKET = """
import os, sys
fd, mode = int(sys.argv[1]), sys.argv[2]
if mode == "systemd":
    os.dup2(fd, 3)
    os.close(fd)
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    bind = []
else:
    bind = ["-b", f"fd://{fd}"]
os.execv(sys.executable, [sys.executable, "-m", "clusterserve", "tests.apps.basic:app", "-w", "2", *bind])
"""


def _serve_inherited_socket(mode):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    proc = subprocess.Popen([sys.executable, "-c", EXEC_WITH_SOCKET, str(fd), mode], cwd=ROOT,
                            pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listener.close()
    try:
        assert wait_until(lambda: _answers(port), timeout=15)
        workers = _children_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        for pid in [proc.pid, *_children_of(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _children_of(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_fd_bind_serves_an_inherited_socket():
    _serve_inherited_socket("fd")


def test_systemd_socket_activation():
    _serve_inherited_socket("systemd")
