"""Starting a real clusterserve as a subprocess, and talking to it over real sockets."""

from __future__ import annotations

import http.client
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Variables of the test runner's own environment that would change the server's settings.
# The HTTP implementation every server of this run uses (.ci/run runs the WSGI tests with each).
HTTP_UNDER_TEST = os.environ.get("CLUSTERSERVE_TEST_HTTP", "")
OUTSIDE_SETTINGS = ("CLUSTERSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT",
                    "FORWARDED_ALLOW_IPS")
LISTENING = re.compile(r"Listening at: (?:https?://(\S+):(\d+)|unix:\S+) ")


class ServerProcess:
    """One clusterserve arbiter started with ``python -m clusterserve``.

    Its error log goes to a file (no pipe to fill up); ``stop`` and
    ``kill_all`` end the arbiter and every worker by pid. A subclass may run
    another server module with the same command line shape (``program``).
    """

    program = "clusterserve"

    def __init__(self, args: Sequence[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None,
                 bind: str | None = "127.0.0.1:0", open_files: int | None = None) -> None:
        """``open_files``: the soft RLIMIT_NOFILE of the server process (as ``ulimit -n``)."""
        self.args = list(args) + (["-b", bind] if bind else [])
        if HTTP_UNDER_TEST and self.program == "clusterserve":
            self.args += ["--http", HTTP_UNDER_TEST]
        self.cwd = cwd
        inherited = {k: v for k, v in os.environ.items() if k not in OUTSIDE_SETTINGS}
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_file = tempfile.NamedTemporaryFile(prefix="clusterserve-", suffix=".log", delete=False)
        # Where the error log is read from: the server's stdout and stderr, unless a test
        # sends the error log elsewhere (errorlog, a log config) and points this there.
        self.log_path = Path(self.log_file.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self.known_pids: set[int] = set()
        self.open_files = open_files

    # -- life --------------------------------------------------------------

    def start(self, *, wait_ready: int | None = None, timeout: float = 15.0) -> ServerProcess:
        """Start; wait for the listening line and ``wait_ready`` workers (default: none)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.program, *self.args],
            cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self.log_file, stderr=subprocess.STDOUT,
            preexec_fn=None if self.open_files is None else self._limit_open_files,
        )
        self.known_pids.add(self.proc.pid)
        match = self.wait_for_log(LISTENING, timeout=timeout)
        if match.group(1):
            self.host, self.port = match.group(1).strip("[]"), int(match.group(2))
        if wait_ready:
            self.wait_ready(wait_ready, timeout=timeout)
        return self

    def _limit_open_files(self) -> None:
        """In the child, before exec: only the server gets the lower limit."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    def wait_ready(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(" ready, serving ") < count:
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} workers not ready in {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        self.workers()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        """Pids of the arbiter's live children (read from /proc)."""
        pids = children_of(self.pid)
        self.known_pids.update(pids)
        return pids

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` to the arbiter and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.workers()
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL every process this server ever had, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.workers()
        for pid in self.known_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- log -----------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10.0,
                     after: int = 0) -> re.Match[str]:
        """Wait until the log (from offset ``after``) matches ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), after)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {regex.pattern!r}:\n{self.log()}")
            if self.proc is not None and self.proc.poll() is not None:
                match = regex.search(self.log(), after)
                if match:
                    return match
                raise AssertionError(
                    f"server exited ({self.proc.returncode}) before {regex.pattern!r}:\n{self.log()}")
            time.sleep(0.05)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")

    # -- talking to it -----------------------------------------------------------

    def http(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str = "/", **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        return request(self, "GET", path, **kwargs)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)


def request(server: ServerProcess, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = server.http()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_exchange(server: ServerProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes (or ``timeout``)."""
    with server.connect(timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    """The status code of the first response in raw bytes (0 if none)."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(match.group(1)) if match else 0


@contextmanager
def running(args: Sequence[str], *, workers: int | None = None, start_timeout: float = 15.0,
            stop_timeout: float = 10.0, **kwargs: Any) -> Iterator[ServerProcess]:
    """A started server that is always stopped and killed afterwards."""
    server = ServerProcess(args, **kwargs)
    try:
        server.start(wait_ready=workers, timeout=start_timeout)
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        server.kill_all()
        os.unlink(server.log_file.name)


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (a USR2 successor the harness did not start)."""
    for child in children_of(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)


def wait_for_line(path: Path, timeout: float = 10.0) -> bool:
    """Until ``path`` holds a whole line: an app opens its marker file before it writes it,
    so a file that merely exists may still be empty."""
    return wait_until(lambda: path.exists() and path.read_text().endswith("\n"), timeout)


def pid_on_new_connection(server: ServerProcess) -> int:
    """GET / of tests.apps.basic:app on a new connection; the pid of the worker that answered."""
    with server.connect(timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    return int(data.split()[-1])
