"""The servers of the ASGI framework matrix, and what the apps and tests share.

Every ASGI framework app is served by clusterserve in each dispatch mode
and by plain ``uvicorn --workers 2``, each on both of uvicorn's HTTP
protocols (``--http h11`` and ``--http httptools``), so that a flow that
fails only under clusterserve is a clusterserve bug and one that fails
under both is the test's.

The apps write what happened out of band (lifespan startup and shutdown,
background tasks, closed streams) as files in the directory named by
``ASGI_APPS_RECORDS`` (asgi_apps/records.py): workers are separate processes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.conftest import DISPATCH_MODES

RECORDS_ENV = "ASGI_APPS_RECORDS"
APPS = Path(__file__).resolve().parent / "asgi_apps"
WORKERS = 2
# Generous: Django, FastAPI or Litestar take a second or more to import on a loaded machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# For pytest-timeout: a module's first test also starts its server (and Django's project).
TEST_TIMEOUT = 240
PROTOCOLS = ("h11", "httptools")


@dataclass(frozen=True)
class ServerKind:
    """One column of the matrix: which server, which dispatch mode, which HTTP protocol."""

    server: str  # "clusterserve" or "uvicorn"
    http: str
    dispatch: str = ""

    def __str__(self) -> str:
        return "-".join(part for part in ("asgi", self.server, self.dispatch, self.http) if part)


SERVER_KINDS = [ServerKind("clusterserve", http, mode) for mode in DISPATCH_MODES for http in PROTOCOLS] \
    + [ServerKind("uvicorn", http) for http in PROTOCOLS]


class UvicornProcess(harness.ServerProcess):
    """``uvicorn APP --workers 2`` on a free port, started and stopped like clusterserve."""

    program = "uvicorn"
    RUNNING = re.compile(r"Uvicorn running on http://([\d.]+):(\d+) ")

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        super().__init__([*args, "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "0",
                          # Its default of 5 s is short for a spawned worker to import a
                          # framework on a loaded machine: the supervisor would abort a
                          # reload, or kill a worker it takes for stuck.
                          "--timeout-worker-healthcheck", str(int(START_TIMEOUT))],
                         cwd=cwd, env=env, bind=None)

    def start(self, *, wait_ready: int | None = None, timeout: float = START_TIMEOUT) -> UvicornProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.program, *self.args], cwd=self.cwd, env=self.env,
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.known_pids.add(self.proc.pid)
        match = self.wait_for_log(self.RUNNING, timeout=timeout)
        self.host, self.port = match.group(1), int(match.group(2))
        if wait_ready:
            self.wait_ready(wait_ready, timeout=timeout)
        return self

    def wait_ready(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``count`` workers, over the server's life, finished lifespan startup."""
        self.wait_for_log(rf"(?s)(Application startup complete\..*){{{count}}}", timeout=timeout)
        self.workers()

    def workers(self) -> list[int]:
        """Pids of the live workers (not multiprocessing's resource tracker)."""
        return [pid for pid in super().workers() if b"resource_tracker" not in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextmanager
def serving(kind: ServerKind, app: str, *, cwd: Path = harness.ROOT,
            env: dict[str, str] | None = None) -> Iterator[harness.ServerProcess]:
    """``app`` served by ``kind`` with two workers, every worker ready. Afterwards stops
    the server with TERM and expects exit code 0 and a log without errors."""
    # The apps record events with tests.frameworks.asgi_apps.records, from any directory.
    env = {"PYTHONPATH": str(harness.ROOT), **(env or {})}
    if kind.server == "uvicorn":
        server: harness.ServerProcess = UvicornProcess([app, "--http", kind.http], cwd=cwd, env=env)
    else:
        server = harness.ServerProcess([app, "-w", str(WORKERS), "--dispatch", kind.dispatch,
                                        "--http", kind.http], cwd=cwd, env=env)
    try:
        server.start(wait_ready=WORKERS, timeout=START_TIMEOUT)
        yield server
        assert server.stop(timeout=STOP_TIMEOUT) == 0, server.log()
        errors = log_errors(server.log())
        assert not errors, f"{server.program} logged errors:\n" + "\n".join(errors)
    finally:
        server.kill_all()
        server.log_path.unlink(missing_ok=True)


@dataclass
class Served:
    """A running server of the matrix, and the directory its app writes records to."""

    kind: ServerKind
    process: harness.ServerProcess
    records: Path

    @property
    def url(self) -> str:
        return f"http://{self.process.host}:{self.process.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.process.host}:{self.process.port}{path}"

    def client(self, *, keep_alive: bool = True) -> httpx.Client:
        """A cookie-keeping client; without keep-alive every request opens a new
        connection, so that a flow's requests spread over the workers."""
        limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
        return httpx.Client(base_url=self.url, timeout=20.0, limits=limits)

    def read_held_stream(self, client: httpx.Client, path: str) -> tuple[httpx.Headers, list[str]]:
        """GET ``path``, a response whose app sends one line and holds back the rest until
        the file named by the ``release`` query parameter exists; drop that file only once
        the first line has arrived. The lines arrive only if the server sends each chunk
        as the app gives it, not once the body is complete."""
        release = f"release-{uuid.uuid4().hex}"
        with client.stream("GET", path, params={"release": release}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(lines)
            (self.records / release).touch()
            return response.headers, [first, *lines]

    def wait_ready(self, count: int) -> None:
        """Wait until ``count`` workers, over the server's life, are ready."""
        self.process.wait_ready(count, timeout=START_TIMEOUT)


def server_fixture(app: str, *, cwd: Path = harness.ROOT) -> Callable[..., Iterator[Served]]:
    """A module-scoped ``server`` fixture: ``app`` served by every kind of the matrix,
    each started once for the module."""

    @pytest.fixture(scope="module", params=SERVER_KINDS, ids=str)
    def server(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
        records = tmp_path_factory.mktemp("records")
        with serving(request.param, app, cwd=cwd, env={RECORDS_ENV: str(records)}) as process:
            yield Served(request.param, process, records)

    return server


@pytest.fixture(autouse=True)
def server_log_stays_clean(server: Served) -> Iterator[None]:
    """No test of the matrix may make its server log an error (autouse where imported)."""
    before = len(server.process.log())
    yield
    errors = log_errors(server.process.log()[before:])
    assert not errors, "the server logged errors:\n" + "\n".join(errors)


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    """The text of ``path`` once it exists (apps write records with an atomic rename)."""
    if not harness.wait_until(path.exists, timeout):
        present = sorted(p.name for p in path.parent.iterdir())
        raise AssertionError(f"{path.name} never appeared; records: {present}")
    return path.read_text()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = STOP_TIMEOUT) -> None:
    if not harness.wait_until(predicate, timeout):
        raise AssertionError(f"not in {timeout}s: {what}")


SERVER_ERRORS = ("Traceback", "Exception in ASGI application", "Error in ASGI Framework",
                 "LocalProtocolError", "[ERROR]", "ERROR:")


def log_errors(text: str) -> list[str]:
    """The lines of a server log that report an error (either server's format)."""
    return [line for line in text.splitlines() if any(marker in line for marker in SERVER_ERRORS)]
