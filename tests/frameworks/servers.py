"""The servers every framework app of the matrix is served by.

clusterserve in each dispatch mode; clusterserve with the app wrapped in
``wsgiref.validate.validator`` (it checks the server's side of PEP 3333);
and gunicorn's sync worker, the reference the same flows must pass on.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DISPATCH_MODES
from tests.harness import HTTP_UNDER_TEST, ROOT, ServerProcess, wait_until

VALIDATOR = "validator"
GUNICORN = "gunicorn"
# gunicorn does not depend on the WSGI codec under test: the rerun of the WSGI tests with
# --http httptools (.ci/run) leaves it out, the first run has it.
SERVER_KINDS = (*DISPATCH_MODES, VALIDATOR) + (() if HTTP_UNDER_TEST else (GUNICORN,))

WORKERS = 2
# Django imports take a few seconds on a loaded 2-core machine.
START_TIMEOUT = 60.0
# A fault in the log: an app's or a server's exception, what the validator raises or warns
# (warnings go to stderr, so to the log), what Python writes when a fault is raised where
# nobody can catch it (the validator's __del__ check that the iterable was closed).
FAULTS = re.compile(r"Traceback|AssertionError|WSGIWarning|Exception ignored|Error handling")


class GunicornProcess(ServerProcess):
    """gunicorn, started and stopped like clusterserve (same flags, same log file)."""

    program = "gunicorn"

    def __init__(self, args: Sequence[str], **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self.env.pop("GUNICORN_CMD_ARGS", None)


def validated(app: str, excused: Sequence[str] = ()) -> str:
    """The app spec that serves ``app`` wrapped in wsgiref.validate.validator, with the
    app's own faults of ``excused`` (see tests/frameworks/apps/validated.py) let through."""
    return f"tests.frameworks.apps.validated:validated({', '.join(map(repr, (app, *excused)))})"


@contextmanager
def serve(kind: str, app: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None,
          ready_path: str = "/", excused: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Serve ``app`` (a ``module:attribute`` or ``module:factory()`` spec) by ``kind``.

    ``excused`` names the framework's faults that the validator lets through.
    Yields once every worker answers ``ready_path``. Afterwards stops the server with TERM,
    expects exit code 0 and a log without faults, and kills whatever is left.
    """
    common = ["-w", str(WORKERS), "--pythonpath", str(ROOT), "--graceful-timeout", "10"]
    if kind == GUNICORN:
        server: ServerProcess = GunicornProcess([app, *common, "-k", "sync"], cwd=cwd, env=env)
    elif kind == VALIDATOR:
        server = ServerProcess([validated(app, excused), *common, "--threads", "4"], cwd=cwd, env=env)
    else:
        server = ServerProcess([app, *common, "--threads", "4", "--dispatch", kind], cwd=cwd, env=env)
    try:
        server.start(timeout=START_TIMEOUT)
        wait_answering(server, ready_path)
        yield server
        assert server.stop(timeout=20) == 0, server.log()
        assert_no_faults(server)
    finally:
        server.kill_all()
        server.log_path.unlink(missing_ok=True)


def wait_answering(server: ServerProcess, path: str) -> None:
    """Wait until ``path`` answers a status below 500 (every worker imports the app first)."""
    deadline = time.monotonic() + START_TIMEOUT
    if server.program == "clusterserve":
        server.wait_ready(WORKERS, timeout=START_TIMEOUT)
    while True:
        try:
            status = httpx.get(base_url(server) + path, timeout=START_TIMEOUT).status_code
        except httpx.TransportError:
            status = 0
        if 0 < status < 500:
            return
        if time.monotonic() > deadline or (server.proc is not None and server.proc.poll() is not None):
            raise AssertionError(f"{path} never answered (last status {status}):\n{server.log()}")
        time.sleep(0.2)


def base_url(server: ServerProcess) -> str:
    return f"http://{server.host}:{server.port}"


def client(server: ServerProcess) -> httpx.Client:
    """A client that keeps cookies, as a browser does; redirects are followed by hand."""
    return httpx.Client(base_url=base_url(server), timeout=30.0)


def open_files_under(server: ServerProcess, directory: Path) -> list[str]:
    """Files under ``directory`` that a worker of ``server`` holds open (read from /proc)."""
    held = []
    for pid in server.workers():
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target.startswith(f"{directory}/"):
                held.append(target)
    return held


def assert_files_closed(server: ServerProcess, directory: Path) -> None:
    """Every file the app opened under ``directory`` is closed soon after its response:
    the server called ``close()`` on the iterable (or the file wrapper)."""
    assert wait_until(lambda: not open_files_under(server, directory), timeout=5), \
        open_files_under(server, directory)


def assert_no_faults(server: ServerProcess, since: int = 0) -> None:
    """No fault in the server's log (from offset ``since``)."""
    log = server.log()[since:]
    fault = FAULTS.search(log)
    assert fault is None, f"{fault.group(0)} in the log of {server.program}:\n{log}"


@contextmanager
def no_new_faults(server: ServerProcess) -> Iterator[None]:
    """The block adds no fault to the server's log."""
    mark = len(server.log())
    yield
    assert_no_faults(server, since=mark)
