"""What a gunicorn deployment brings along works: ./gunicorn.conf.py, GUNICORN_CMD_ARGS,
-c python:MODULE, daemon (-D), the ssl_context hook and reuse_port."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme

from tests.harness import is_alive, kill_tree, running, wait_until

APP = textwrap.dedent("""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from the app\\n"]
""")
START = 20.0


def project(tmp_path: Path, conf: str | None = None) -> Path:
    """A directory holding an app and, maybe, a gunicorn.conf.py."""
    (tmp_path / "app.py").write_text(APP)
    if conf is not None:
        (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(conf))
    return tmp_path


def get(host: str, port: int) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- ./gunicorn.conf.py, GUNICORN_CMD_ARGS, python:MODULE ---------------------------


def test_a_directory_with_only_gunicorn_conf_py_runs_with_its_settings_and_hooks(tmp_path):
    cwd = project(tmp_path, """
        import os
        workers = 2
        worker_tmp_dir = "/dev/shm"

        def on_starting(server):
            server.log.info("hook on_starting ran")
    """)
    with running(["app:app"], cwd=cwd, workers=2) as server:
        assert get(server.host, server.port) == (200, b"from the app\n")
        log = server.log()
        assert "[INFO] Config file: gunicorn.conf.py (found in the working directory)" in log
        assert "hook on_starting ran" in log
        assert ("config file gunicorn.conf.py: gunicorn setting 'worker_tmp_dir' has no effect "
                "here") in log
        assert len(server.workers()) == 2


def test_gunicorn_cmd_args_are_read_and_clusterserve_cmd_args_win(tmp_path):
    cwd = project(tmp_path)
    env = {"GUNICORN_CMD_ARGS": "--workers=3 --threads 2", "CLUSTERSERVE_CMD_ARGS": "--threads 4"}
    with running(["app:app"], cwd=cwd, workers=3, env=env) as server:
        assert "workers: 3, threads: 4 if WSGI" in server.log()
        assert get(server.host, server.port)[0] == 200


def test_config_as_a_python_module(tmp_path):
    cwd = project(tmp_path)
    (cwd / "settings").mkdir()
    (cwd / "settings" / "__init__.py").write_text("")
    (cwd / "settings" / "gunicorn.py").write_text("workers = 2\n")
    with running(["-c", "python:settings.gunicorn", "app:app"], cwd=cwd, workers=2) as server:
        assert "[INFO] Config file: python:settings.gunicorn" in server.log()
        assert get(server.host, server.port)[0] == 200


def test_a_refused_setting_stops_the_start_with_exit_2_naming_it(tmp_path):
    cwd = project(tmp_path, "workers = 2\nsyslog = True\n")
    result = subprocess.run([sys.executable, "-m", "clusterserve", "app:app"], cwd=cwd,
                            capture_output=True, text=True, timeout=START)
    assert result.returncode == 2
    assert result.stderr.startswith("clusterserve: error: setting 'syslog' from config file "
                                    "gunicorn.conf.py: not supported:")


# -- daemon ----------------------------------------------------------------------------


class Daemon:
    """A daemonized clusterserve, found through its pidfile and error log file."""

    def __init__(self, cwd: Path, args: list[str]) -> None:
        self.cwd = cwd
        self.pidfile = cwd / "server.pid"
        self.errorlog = cwd / "error.log"
        self.args = ["app:app", "-D", "-p", str(self.pidfile), "--error-logfile", str(self.errorlog),
                     *args]
        self.pids: set[int] = set()

    def start(self) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "clusterserve", *self.args], cwd=self.cwd,
                                capture_output=True, text=True, timeout=START)
        self.took = time.monotonic() - started
        if self.pidfile.exists():
            self.pids.add(self.pid)
        return result

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def port(self) -> int:
        match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+) ", self.errorlog.read_text())
        assert match, self.errorlog.read_text()
        return int(match.group(1))

    def kill(self) -> None:
        for pid in self.pids:
            kill_tree(pid)


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def make(cwd: Path, *args: str) -> Daemon:
        daemon = Daemon(cwd, list(args))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


def test_daemon_returns_once_ready_and_serves_detached(tmp_path, daemons):
    daemon = daemons(project(tmp_path), "-w", "2", "-b", "127.0.0.1:0")
    result = daemon.start()
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    # Ready when the command returned: both workers say so already, and a request is served.
    assert daemon.errorlog.read_text().count(" ready, serving ") == 2
    assert get("127.0.0.1", daemon.port()) == (200, b"from the app\n")
    pid = daemon.pid
    assert os.getsid(pid) != os.getsid(0)  # a session of its own
    stdio = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)}
    assert stdio == {"/dev/null"}
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not is_alive(pid), timeout=15)
    assert not daemon.pidfile.exists()


def test_daemon_that_cannot_load_the_app_exits_non_zero_with_the_error(tmp_path, daemons):
    cwd = project(tmp_path)
    (cwd / "broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    daemon = daemons(cwd, "-b", "127.0.0.1:0")
    daemon.args[0] = "broken:app"
    result = daemon.start()
    assert result.returncode == 3
    assert "RuntimeError: broken on purpose" in result.stderr
    assert "the app cannot be loaded" in result.stderr


def test_daemon_that_cannot_bind_exits_1_with_the_error(tmp_path, daemons):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemons(project(tmp_path), "-b", f"127.0.0.1:{port}")
        result = daemon.start()
    assert result.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}: address already in use" in result.stderr


def test_daemon_with_stdio_inheritance_keeps_stderr(tmp_path, daemons):
    daemon = daemons(project(tmp_path), "-R", "-b", "127.0.0.1:0")
    with open(tmp_path / "stderr.txt", "w") as stderr:
        subprocess.run([sys.executable, "-m", "clusterserve", *daemon.args], cwd=tmp_path,
                       stderr=stderr, stdout=subprocess.DEVNULL, timeout=START, check=True)
    daemon.pids.add(daemon.pid)
    assert os.readlink(f"/proc/{daemon.pid}/fd/2") == str(tmp_path / "stderr.txt")


def test_usr2_successor_of_a_daemon_keeps_the_pidfile_right(tmp_path, daemons):
    daemon = daemons(project(tmp_path), "-b", "127.0.0.1:0")
    assert daemon.start().returncode == 0
    old = daemon.pid
    os.kill(old, signal.SIGUSR2)
    assert wait_until(lambda: daemon.pidfile.exists() and daemon.pid != old, timeout=15)
    new = daemon.pid
    daemon.pids.add(new)
    assert (tmp_path / "server.pid.oldbin").read_text().strip() == str(old)
    assert wait_until(lambda: "the new arbiter is ready" in daemon.errorlog.read_text(), timeout=15)
    os.kill(old, signal.SIGTERM)
    assert wait_until(lambda: not is_alive(old), timeout=15)
    assert daemon.pid == new and not (tmp_path / "server.pid.oldbin").exists()
    assert get("127.0.0.1", daemon.port())[0] == 200
    assert is_alive(new)
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not is_alive(new), timeout=15)
    assert not daemon.pidfile.exists()


# -- ssl_context and reuse_port --------------------------------------------------------


def test_ssl_context_hook_makes_the_context_the_server_uses(tmp_path):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cwd = project(tmp_path, """
        import ssl

        def ssl_context(config, default_ssl_context_factory):
            context = default_ssl_context_factory()
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            return context
    """)
    with running(["app:app", "--certfile", "cert.pem"], cwd=cwd, workers=1) as server:
        client = ssl.create_default_context()
        ca.configure_trust(client)
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            with socket.create_connection((server.host, server.port), timeout=10) as raw:
                client.wrap_socket(raw, server_hostname="127.0.0.1")
        client.maximum_version = ssl.TLSVersion.TLSv1_3
        with socket.create_connection((server.host, server.port), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == "TLSv1.3"
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_reuse_port_lets_another_socket_bind_the_same_port(tmp_path):
    with running(["app:app", "--reuse-port"], cwd=project(tmp_path), workers=1) as server:
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            other.bind((server.host, server.port))  # EADDRINUSE unless ours has SO_REUSEPORT too
    with running(["app:app"], cwd=project(tmp_path), workers=1) as server:
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError):
                other.bind((server.host, server.port))

