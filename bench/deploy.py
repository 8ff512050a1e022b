#!/usr/bin/env python3
"""Reload under load: failed requests of clusterserve and gunicorn side by side.

Run from the repository root with the project's venv (see
docs/deploy-under-load.md):

    .venv/bin/python bench/deploy.py --rev HEAD       # everything, 3 repetitions (~7 min), HEAD's clusterserve
    .venv/bin/python bench/deploy.py                  # the same with the working tree's clusterserve
    .venv/bin/python bench/deploy.py --reps 1 --servers gunicorn-sync clusterserve-wsgi-shared

Every server runs ``bench/deploy_apps`` (``<version> <pid>``) with 2 workers
on 127.0.0.1, ``--keep-alive 5 --graceful-timeout 10``.  clusterserve runs on
this interpreter (``python -m clusterserve``); gunicorn 27 (``-k sync``,
``-k gthread``, ``-k uvicorn_worker.UvicornWorker``) runs from
bench/.venv-deploy, which this script makes from bench/requirements-deploy.txt.

Scenario ``reload`` (about 10 s): 16 client threads (8 on a new connection per
request, 8 on keep-alive connections) while the script sends, one second
apart and each once the previous one has settled: HUP, TTIN, (new version
written) HUP, TTOU, SIGKILL of one worker, HUP.  Scenario ``usr2``: the same
clients; the new version is written, then USR2; once the new master is up
(clusterserve: its "new arbiter is ready" line; gunicorn: the new master's
workers exist, plus 1 s for them to import the app, as gunicorn has no
ready signal) the old master gets WINCH (gunicorn only) and TERM; the new
master serves alone for 1.5 s.

A keep-alive client retries once, on a new connection, only when the server
closed a connection that had already served a request before any byte of
the answer (EOF or reset on send or on the first read): what browsers and
HTTP libraries do.  Anything else (refused connection, reset or EOF on a
new connection or mid-response, a timeout, a status other than 200) is a
failed request.  Failures within 1 s after the SIGKILL are counted apart.

Every loop is bounded in count and time, every process is stopped by pid
(the script is a child subreaper, so a master started by USR2 stays its
child), one JSON file goes to bench/results/deploy-*.json and the tables
replace the results section of docs/deploy-under-load.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import datetime
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv-deploy"
REQUIREMENTS = BENCH / "requirements-deploy.txt"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "deploy-under-load.md"
DOC_START = "<!-- deploy.py results: start -->"
DOC_END = "<!-- deploy.py results: end -->"

SOURCE = ROOT  # where the servers run (and import clusterserve from): the working tree, or --rev's export
HOST = "127.0.0.1"
WORKERS = 2
CLIENTS = 16
COMMON_FLAGS = ("-w", str(WORKERS), "-b", f"{HOST}:0", "--keep-alive", "5", "--graceful-timeout", "10")
STEP_GAP = 1.0          # seconds between two steps of a scenario (after the previous one settled)
SETTLE_TIMEOUT = 15.0   # a step that has not settled by then is recorded as such, and the run goes on
KILL_WINDOW = 1.0       # failures this long after the SIGKILL are counted apart
IO_TIMEOUT = 5.0        # per connect, send and read: longer means a failed request
CLIENT_DEADLINE = 40.0  # no client runs longer than this, whatever happens to the control thread
MAX_ATTEMPTS = 30_000   # requests per client thread, at most
OLD, NEW = "v1", "v2-after-deploy"  # different lengths: a stale .pyc can never match
OUTSIDE_SETTINGS = ("CLUSTERSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT", "FORWARDED_ALLOW_IPS")
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Spec:
    name: str
    label: str
    kind: str          # "clusterserve" or "gunicorn"
    interface: str     # "wsgi" or "asgi"
    args: tuple[str, ...]


SPECS = [
    *[Spec(f"clusterserve-{iface}-{mode}", f"clusterserve {iface.upper()} `{mode}`", "clusterserve", iface,
           ("--dispatch", mode))
      for iface in ("wsgi", "asgi") for mode in ("shared", "round-robin", "reuseport")],
    Spec("gunicorn-sync", "gunicorn `-k sync`", "gunicorn", "wsgi", ("-k", "sync")),
    Spec("gunicorn-gthread", "gunicorn `-k gthread`", "gunicorn", "wsgi", ("-k", "gthread")),
    Spec("gunicorn-uvicorn", "gunicorn `-k uvicorn_worker.UvicornWorker`", "gunicorn", "asgi",
         ("-k", "uvicorn_worker.UvicornWorker")),
]
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


# -- processes ----------------------------------------------------------------------


def become_subreaper() -> bool:
    """Orphans of our servers (a master started by USR2) are reparented to us, not to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found.update(int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return found


def is_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        reap(pid)
        if not is_alive(pid):
            reap(pid)
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def ours(pid: int) -> bool:
    """Still one of the server processes (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"clusterserve" in cmdline or b"gunicorn" in cmdline or b"deploy_apps" in cmdline


class Server:
    """One master (and, after USR2, its successor), its log file, and every pid it ever had."""

    def __init__(self, spec: Spec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.pidfile = workdir / "server.pid"
        self.log_path = workdir / "server.log"
        self.app = f"bench.deploy_apps.{spec.interface}:app"
        flags = [*COMMON_FLAGS, "--pythonpath", str(workdir), "-p", str(self.pidfile), *spec.args]
        if spec.kind == "clusterserve":
            self.command = [sys.executable, "-m", "clusterserve", self.app, *flags]
        else:
            self.command = [str(VENV / "bin" / "gunicorn"), self.app, *flags, "--error-logfile", "-"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.master = 0
        self.port = 0
        self.known: set[int] = set()
        self.expected = WORKERS

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in OUTSIDE_SETTINGS}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.master = self.proc.pid
        self.known.add(self.master)
        self.port = int(self.wait_log(LISTENING, timeout=20).group(1))
        self.settle(WORKERS, log_pattern=r"ready, serving" if self.spec.kind == "clusterserve" else None,
                    log_count=WORKERS, timeout=20, required=True)
        deadline = time.monotonic() + 20
        while probe(self.port)[0] is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec.name}: no answer 20 s after start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.3)  # gunicorn has no ready line: let both workers import the app

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float, after: int = 0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), after)
            if match:
                return match
            if self.proc is not None and self.proc.poll() is not None and self.master == self.proc.pid:
                raise RuntimeError(f"{self.spec.name}: exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec.name}: log never matched {regex.pattern!r}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def workers(self, master: int | None = None, exclude: set[int] | None = None) -> set[int]:
        pids = children(master or self.master) - (exclude or set())
        self.known.update(pids)
        return pids

    def send(self, sig: int, pid: int | None = None) -> None:
        os.kill(pid or self.master, sig)

    def settle(self, count: int, before: set[int] | None = None, new: int = 0, lost: int = 0,
               gone: set[int] | None = None, log_pattern: str | None = None, log_count: int = 1,
               after: int = 0, timeout: float = SETTLE_TIMEOUT, required: bool = False) -> float | None:
        """Wait for ``count`` workers, ``new`` of them and ``lost`` fewer of ``before``, none of ``gone``,
        and ``log_count`` matches of ``log_pattern`` in the log after ``after``; seconds taken."""
        start = time.monotonic()
        regex = re.compile(log_pattern) if log_pattern else None
        before = before or set()
        while True:
            pids = self.workers()
            done = (len(pids) == count and len(pids - before) >= new and len(before - pids) >= lost
                    and not pids & (gone or set()))
            if done and regex is not None:
                done = len(regex.findall(self.log()[after:])) >= log_count
            if done:
                return round(time.monotonic() - start, 3)
            if time.monotonic() - start > timeout:
                if required:
                    raise RuntimeError(f"{self.spec.name}: {count} workers not there in {timeout}s:\n"
                                       f"{self.log()[-3000:]}")
                return None
            time.sleep(0.02)

    def stop(self) -> dict[str, Any]:
        """TERM the master(s), wait, then SIGKILL whatever is left of the pids we saw."""
        masters = [pid for pid in dict.fromkeys([self.master, *([self.proc.pid] if self.proc else [])])
                   if pid and is_alive(pid)]
        for pid in masters:
            self.known.update(children(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        clean = all(wait_gone(pid, 15) for pid in masters)
        leftovers = []
        for pid in sorted(self.known):
            if is_alive(pid) and ours(pid):
                leftovers.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self.known:
            wait_gone(pid, 5)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        return {"stopped_cleanly": clean and not leftovers, "killed_leftovers": leftovers,
                "exit_code": self.proc.returncode if self.proc else None}


def write_version(directory: Path, version: str) -> None:
    (directory / "deploy_version.py").write_text(f"VERSION = {version!r}\n")
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)


# -- clients --------------------------------------------------------------------------


class NoReply(Exception):
    """The server closed (EOF or reset) before sending any byte of an answer."""


class Failed(Exception):
    """Anything else that is not a whole 200 answer."""


REQUEST = {True: b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n",
           False: b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"}


def exchange(sock: socket.socket, keep_alive: bool) -> tuple[int, bool, bytes]:
    """One request; (status, server wants to close, body)."""
    try:
        sock.sendall(REQUEST[keep_alive])
    except TimeoutError as err:
        raise Failed(f"send timed out: {err}") from None
    except OSError as err:
        raise NoReply(f"send: {err!r}") from None
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise Failed(f"no answer in {IO_TIMEOUT}s" + (" (partial head)" if data else "")) from None
        except OSError as err:
            if not data:
                raise NoReply(f"recv: {err!r}") from None
            raise Failed(f"{err!r} mid-head") from None
        if not chunk:
            if not data:
                raise NoReply("EOF") from None
            raise Failed(f"EOF mid-head after {len(data)} bytes")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    if not match:
        raise Failed(f"bad status line {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"content-length" not in headers:
        raise Failed(f"no content-length (status {match.group(1).decode()})")
    length = int(headers[b"content-length"])
    while len(body) < length:
        try:
            chunk = sock.recv(65536)
        except OSError as err:
            raise Failed(f"{err!r} mid-body") from None
        if not chunk:
            raise Failed("EOF mid-body")
        body += chunk
    close = headers.get(b"connection") == b"close" or lines[0].startswith(b"HTTP/1.0")
    return int(match.group(1)), close, body


class LoadClient(threading.Thread):
    """Requests in a loop until stopped, on new connections or keep-alive ones (see the module doc)."""

    def __init__(self, port: int, keep_alive: bool, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.keep_alive, self.deadline = port, keep_alive, deadline
        self.ok = self.failed = self.retried = self.status_5xx = 0
        self.failures: list[tuple[float, float, str]] = []  # (started, failed, what)
        self.slowest = 0.0
        self.slow = 0  # answered, but after more than a second
        self.retries: list[float] = []
        self.versions: dict[str, list[float]] = {}  # version -> [count, first seen, last seen]
        self.pids: set[int] = set()
        self.stop = threading.Event()
        self.started = 0.0

    def run(self) -> None:
        sock: socket.socket | None = None
        served = attempts = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline and attempts < MAX_ATTEMPTS:
            attempts += 1
            self.started = time.monotonic()
            if sock is None:
                try:
                    sock = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
                except OSError as err:
                    self._fail(f"connect: {err!r}")
                    time.sleep(0.01)
                    continue
                served = 0
            try:
                status, close, body = exchange(sock, self.keep_alive)
            except NoReply as err:
                sock.close()
                sock = None
                if self.keep_alive and served:
                    self.retried += 1
                    self.retries.append(time.monotonic())
                else:
                    self._fail(f"no answer on a {'new' if not served else 'used'} connection: {err}")
                continue
            except Failed as err:
                sock.close()
                sock = None
                self._fail(str(err))
                continue
            if status != 200:
                sock.close()
                sock = None
                self.status_5xx += status >= 500
                self._fail(f"status {status}: {body[:80]!r}")
                continue
            self.ok += 1
            served += 1
            took = time.monotonic() - self.started
            self.slowest = max(self.slowest, took)
            self.slow += took > 1.0
            self._saw(body)
            if close or not self.keep_alive:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def _fail(self, what: str) -> None:
        self.failed += 1
        self.failures.append((self.started, time.monotonic(),
                              f"{'keep-alive' if self.keep_alive else 'new-conn'}: {what}"))

    def _saw(self, body: bytes) -> None:
        version, _, pid = body.decode(errors="replace").strip().rpartition(" ")
        now = time.monotonic()
        seen = self.versions.setdefault(version, [0, now, now])
        seen[0] += 1
        seen[2] = now
        with contextlib.suppress(ValueError):
            self.pids.add(int(pid))


def probe(port: int) -> tuple[str | None, str]:
    """GET / on a new connection: (version, detail), version None on any failure."""
    try:
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
            status, _, body = exchange(sock, keep_alive=False)
    except (OSError, NoReply, Failed) as err:
        return None, repr(err)
    if status != 200:
        return None, f"status {status}"
    return body.decode(errors="replace").strip().rpartition(" ")[0], "ok"


def probes(port: int, count: int) -> list[str | None]:
    return [probe(port)[0] for _ in range(count)]


class Load:
    """The 16 client threads, started and stopped together."""

    def __init__(self, port: int) -> None:
        self.t0 = time.monotonic()
        self.clients = [LoadClient(port, keep_alive=i % 2 == 0, deadline=self.t0 + CLIENT_DEADLINE)
                        for i in range(CLIENTS)]
        for client in self.clients:
            client.start()

    def rel(self, at: float | None = None) -> float:
        return round((time.monotonic() if at is None else at) - self.t0, 3)

    def finish(self) -> float:
        for client in self.clients:
            client.stop.set()
        for client in self.clients:
            client.join(timeout=IO_TIMEOUT * 3)
        return self.rel()

    def summary(self, kill_at: float | None, duration: float) -> dict[str, Any]:
        failures = sorted(f for c in self.clients for f in c.failures)

        def after_kill(started: float, ended: float) -> bool:  # in flight at the kill, or sent within 1 s after
            return kill_at is not None and started < kill_at + KILL_WINDOW and ended >= kill_at

        in_kill = [f for f in failures if after_kill(f[0], f[1])]
        retries = sorted(at for c in self.clients for at in c.retries)
        versions: dict[str, dict[str, float]] = {}
        for client in self.clients:
            for version, (count, first, last) in client.versions.items():
                entry = versions.setdefault(version, {"count": 0, "first": first, "last": last})
                entry["count"] += count
                entry["first"], entry["last"] = min(entry["first"], first), max(entry["last"], last)
        ok = sum(c.ok for c in self.clients)
        return {
            "ok": ok,
            "failed": len(failures),
            "failed_after_kill": len(in_kill),
            "failed_elsewhere": len(failures) - len(in_kill),
            "retried": len(retries),
            "retried_after_kill": sum(1 for at in retries
                                      if kill_at is not None and kill_at <= at < kill_at + KILL_WINDOW),
            "status_5xx": sum(c.status_5xx for c in self.clients),
            "slow_over_1s": sum(c.slow for c in self.clients),
            "slowest_ok": round(max(c.slowest for c in self.clients), 3),
            "requests_per_second": round(ok / duration, 1) if duration else None,
            "ok_new_connection": sum(c.ok for c in self.clients if not c.keep_alive),
            "ok_keep_alive": sum(c.ok for c in self.clients if c.keep_alive),
            "clients_still_running": sum(c.is_alive() for c in self.clients),
            "worker_pids_seen": len(set().union(*(c.pids for c in self.clients))),
            "versions": {v: {"count": e["count"], "first": self.rel(e["first"]), "last": self.rel(e["last"])}
                         for v, e in sorted(versions.items())},
            "failures": [[self.rel(started), self.rel(ended), what] for started, ended, what in failures[:40]],
            "retry_times": [self.rel(at) for at in retries[:40]],
        }


# -- scenarios -------------------------------------------------------------------------


def notable_log_lines(text: str) -> list[str]:
    keep = re.compile(r"error|warn|critical|exception|traceback|refused|timed out|killed|crash", re.IGNORECASE)
    return [line for line in text.splitlines() if keep.search(line)][:60]


def run_reload(spec: Spec) -> dict[str, Any]:
    """HUP, TTIN, (new version) HUP, TTOU, SIGKILL, HUP under 16 clients."""
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        workdir = Path(tmp)
        write_version(workdir, OLD)
        server = Server(spec, workdir)
        steps: list[dict[str, Any]] = []
        load = None
        kill_at = None
        result: dict[str, Any] = {"server": spec.name, "scenario": "reload", "command": shlex.join(server.command)}
        try:
            server.start()
            load = Load(server.port)

            def hup(**extra: Any) -> float | None:
                before, offset = server.workers(), len(server.log())
                sent = time.monotonic()
                server.send(signal.SIGHUP)
                server.expected = WORKERS  # a reload reads the worker count from the settings again
                pattern = r"SIGHUP: reload done" if spec.kind == "clusterserve" else None
                settled = server.settle(server.expected, before=before, new=WORKERS, gone=before,
                                        log_pattern=pattern, after=offset)
                steps.append({"step": "HUP", "at": load.rel(sent), "settled_after": settled,
                              "old_workers_gone": not before & server.workers(), **extra})
                return settled

            time.sleep(STEP_GAP)
            hup()

            time.sleep(STEP_GAP)
            before, offset, sent = server.workers(), len(server.log()), time.monotonic()
            server.send(signal.SIGTTIN)
            server.expected += 1
            settled = server.settle(server.expected, before=before, new=1,
                                    log_pattern=r"ready, serving" if spec.kind == "clusterserve"
                                    else r"Booting worker", after=offset)
            steps.append({"step": "TTIN", "at": load.rel(sent), "settled_after": settled})

            time.sleep(STEP_GAP)
            write_version(workdir, NEW)
            hup(version_written=NEW)
            mid = probes(server.port, 4)
            steps[-1]["probes_after"] = mid

            time.sleep(STEP_GAP)
            before, sent = server.workers(), time.monotonic()
            server.send(signal.SIGTTOU)
            server.expected -= 1
            settled = server.settle(server.expected, before=before, lost=1)
            steps.append({"step": "TTOU", "at": load.rel(sent), "settled_after": settled})

            time.sleep(STEP_GAP)
            before = server.workers()
            victim = min(before)
            offset = len(server.log())
            kill_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            settled = server.settle(server.expected, before=before, new=1, gone={victim},
                                    log_pattern=r"ready, serving" if spec.kind == "clusterserve" else None,
                                    after=offset)
            steps.append({"step": "KILL", "at": load.rel(kill_at), "pid": victim, "workers_before": len(before),
                          "settled_after": settled})

            time.sleep(STEP_GAP)
            hup()

            time.sleep(STEP_GAP)
            duration = load.finish()
            final = probes(server.port, 10)
            result.update(load.summary(kill_at, duration))
            result.update({
                "duration": duration,
                "steps": steps,
                "all_settled": all(step["settled_after"] is not None for step in steps),
                "final_probes": final,
                "new_version_served": all(v == NEW for v in final + mid),
                "workers_at_end": len(server.workers()),
            })
        except Exception as err:  # noqa: BLE001 - recorded, the other runs go on
            result["error"] = f"{type(err).__name__}: {err}"
            if load is not None:
                result.update(load.summary(kill_at, load.finish()))
        finally:
            result["stop"] = server.stop()
            text = server.log()
            result["log_notable"] = notable_log_lines(text)
            result["log_tail"] = text.splitlines()[-15:]
        return result


def run_usr2(spec: Spec) -> dict[str, Any]:
    """New version, USR2, then (WINCH and) TERM of the old master, under 16 clients."""
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        workdir = Path(tmp)
        write_version(workdir, OLD)
        server = Server(spec, workdir)
        steps: list[dict[str, Any]] = []
        load = None
        result: dict[str, Any] = {"server": spec.name, "scenario": "usr2", "command": shlex.join(server.command)}
        try:
            server.start()
            load = Load(server.port)
            old = server.master
            time.sleep(STEP_GAP)
            write_version(workdir, NEW)
            offset, sent = len(server.log()), time.monotonic()
            server.send(signal.SIGUSR2)
            if spec.kind == "clusterserve":
                server.wait_log(r"SIGUSR2: the new arbiter is ready; stopping our workers", 20, after=offset)
                new = int(server.pidfile.read_text().strip())
            else:
                second = Path(f"{server.pidfile}.2")
                deadline = time.monotonic() + 20
                while not (second.exists() and second.read_text().strip()):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no {second.name} 20 s after USR2:\n{server.log()[-3000:]}")
                    time.sleep(0.02)
                new = int(second.read_text().strip())
            server.known.add(new)
            deadline = time.monotonic() + 20
            while len(server.workers(new)) < WORKERS:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the new master has no {WORKERS} workers:\n{server.log()[-3000:]}")
                time.sleep(0.02)
            steps.append({"step": "USR2", "at": load.rel(sent), "new_master": new,
                          "new_master_up_after": round(time.monotonic() - sent, 3)})
            if spec.kind == "gunicorn":
                time.sleep(1.0)  # no ready line: let the new workers import the app
                at = time.monotonic()
                server.send(signal.SIGWINCH, old)
                steps.append({"step": "WINCH old master", "at": load.rel(at)})
            else:
                start = time.monotonic()
                while server.workers(old, exclude={new}) and time.monotonic() - start < SETTLE_TIMEOUT:
                    time.sleep(0.02)
                gone = round(time.monotonic() - start, 3)
                steps.append({"step": "old workers gone", "at": load.rel(), "waited": gone})
            at = time.monotonic()
            server.send(signal.SIGTERM, old)
            exited = wait_gone(old, 20)
            if server.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.proc.wait(timeout=5)
            steps.append({"step": "TERM old master", "at": load.rel(at), "exited": exited,
                          "exit_code": server.proc.returncode if server.proc else None,
                          "took": round(time.monotonic() - at, 3)})
            server.master = new
            time.sleep(STEP_GAP * 1.5)
            duration = load.finish()
            final = probes(server.port, 10)
            result.update(load.summary(None, duration))
            result.update({
                "duration": duration,
                "steps": steps,
                "upgrade_took": round(time.monotonic() - sent, 3),
                "final_probes": final,
                "new_version_served": all(v == NEW for v in final),
                "workers_at_end": len(server.workers()),
                "pidfile_after": server.pidfile.read_text().strip() if server.pidfile.exists() else None,
            })
        except Exception as err:  # noqa: BLE001 - recorded, the other runs go on
            result["error"] = f"{type(err).__name__}: {err}"
            if load is not None:
                result.update(load.summary(None, load.finish()))
        finally:
            result["stop"] = server.stop()
            text = server.log()
            result["log_notable"] = notable_log_lines(text)
            result["log_tail"] = text.splitlines()[-15:]
        return result


SCENARIOS = {"reload": run_reload, "usr2": run_usr2}


# -- setup -----------------------------------------------------------------------------


def ensure_venv() -> dict[str, str]:
    """bench/.venv-deploy with bench/requirements-deploy.txt; reinstalled when the file changes."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    python = VENV / "bin" / "python"
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == digest):
        print(f"setting up {VENV.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest + "\n")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    return dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)


def export_source(rev: str, directory: Path) -> str:
    """clusterserve/ as of ``rev`` (git archive) plus this script's apps, in ``directory``."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "clusterserve"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    shutil.copytree(BENCH / "deploy_apps", directory / "bench" / "deploy_apps",
                    ignore=shutil.ignore_patterns("__pycache__"))
    found = subprocess.run([sys.executable, "-c", "import clusterserve; print(clusterserve.__file__)"],
                           cwd=directory, check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(directory.resolve()):
        raise SystemExit(f"--rev: the servers would import {found}, not the export in {directory}")
    return commit


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


# -- report ------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """``median`` alone when every run agrees, else ``median (min–max)``."""
    if not values:
        return "–"
    med, low, high = statistics.median(values), min(values), max(values)

    def fmt(x: float) -> str:
        if float(x).is_integer() or abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.2f}" if abs(x) < 10 else f"{x:,.1f}"

    return fmt(med) if low == high else f"{fmt(med)} ({fmt(low)}–{fmt(high)})"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["server"])].append(run)
    summary: dict[str, dict[str, Any]] = {}
    for (scenario, name), group in grouped.items():
        done = [r for r in group if "error" not in r]
        entry = {"runs": len(group), "errors": [r["error"] for r in group if "error" in r]}
        for key in ("ok", "failed", "failed_after_kill", "failed_elsewhere", "retried", "status_5xx",
                    "requests_per_second", "slow_over_1s", "slowest_ok"):
            values = [r[key] for r in group if r.get(key) is not None]
            entry[key] = {"median": statistics.median(values) if values else None,
                          "min": min(values, default=None), "max": max(values, default=None), "all": values}
        entry["new_version_served"] = sum(1 for r in done if r.get("new_version_served"))
        entry["all_settled"] = sum(1 for r in done if r.get("all_settled", True))
        summary[f"{scenario}/{name}"] = entry
    return summary


def cell(entry: dict[str, Any], key: str) -> str:
    return spread(entry[key]["all"])


def tables(data: dict[str, Any]) -> str:
    summary = data["summary"]
    lines = ["### HUP ×3, TTIN, TTOU, SIGKILL of a worker", "",
             ("| server | requests ok | failed (all) | failed, not the SIGKILL's | failed in the SIGKILL's 1 s "
              "| retried (keep-alive) | 5xx | answered after > 1 s | slowest answer (s) | new version served |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for spec in SPECS:
        entry = summary.get(f"reload/{spec.name}")
        if entry is None:
            continue
        ok_runs = entry["runs"] - len(entry["errors"])
        lines.append(f"| {spec.label} | {cell(entry, 'ok')} | {cell(entry, 'failed')} "
                     f"| {cell(entry, 'failed_elsewhere')} | {cell(entry, 'failed_after_kill')} "
                     f"| {cell(entry, 'retried')} | {cell(entry, 'status_5xx')} "
                     f"| {cell(entry, 'slow_over_1s')} | {cell(entry, 'slowest_ok')} "
                     f"| {entry['new_version_served']}/{ok_runs} runs"
                     + (f" ({len(entry['errors'])} run(s) errored)" if entry["errors"] else "") + " |")
    lines += ["", "### USR2 upgrade, then TERM of the old master (gunicorn: WINCH, then TERM)", "",
              ("| server | requests ok | failed | retried (keep-alive) | 5xx | answered after > 1 s "
               "| slowest answer (s) | new version served | USR2 → old master gone (s) |"),
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for spec in SPECS:
        entry = summary.get(f"usr2/{spec.name}")
        if entry is None:
            continue
        took = [r["upgrade_took"] for r in data["runs"]
                if r["scenario"] == "usr2" and r["server"] == spec.name and "upgrade_took" in r]
        ok_runs = entry["runs"] - len(entry["errors"])
        lines.append(f"| {spec.label} | {cell(entry, 'ok')} | {cell(entry, 'failed')} | {cell(entry, 'retried')} "
                     f"| {cell(entry, 'status_5xx')} | {cell(entry, 'slow_over_1s')} | {cell(entry, 'slowest_ok')} "
                     f"| {entry['new_version_served']}/{ok_runs} runs"
                     + (f" ({len(entry['errors'])} run(s) errored)" if entry["errors"] else "")
                     + f" | {spread(took)} |")
    return "\n".join(lines)


def results_section(data: dict[str, Any], json_path: str) -> str:
    meta = data["meta"]
    peers = data["peers"]
    return "\n".join([
        DOC_START,
        "",
        f"Measured {meta['date']}, clusterserve as of commit `{meta['source']['commit'][:12]}`"
        + (" plus uncommitted changes" if meta["source"].get("uncommitted_changes_in_clusterserve") else "")
        + f", {meta['machine']['cpus']} CPUs, Python {meta['machine']['python']}, "
        f"gunicorn {peers.get('gunicorn', '?')}, uvicorn {peers.get('uvicorn', '?')}, "
        f"uvicorn-worker {peers.get('uvicorn-worker', '?')}; "
        f"{meta['reps']} runs of each, interleaved; load average at start "
        f"{meta['machine']['loadavg_at_start'][0]:.1f}. Raw numbers: `{json_path}`.",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "Each cell: median over the runs, with (min–max) when they differ.",
        "",
        tables(data),
        "",
        DOC_END,
    ])


def update_doc(doc: Path, section: str) -> None:
    if doc.exists() and DOC_START in (text := doc.read_text()) and DOC_END in text:
        before, rest = text.split(DOC_START, 1)
        _, after = rest.split(DOC_END, 1)
        doc.write_text(before + section + after)
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("# Deploys under load\n\n" + section + "\n")


# -- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each server and scenario (default 3)")
    parser.add_argument("--servers", nargs="+", choices=list(SPEC_BY_NAME), default=list(SPEC_BY_NAME))
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON file")
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file whose results section is replaced")
    parser.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the tables from a results file")
    parser.add_argument("--rev", help="run clusterserve as of this commit (git archive to a temporary "
                                      "directory) instead of the working tree")
    args = parser.parse_args()

    if args.render:
        data = json.loads(args.render.read_text())
        data["summary"] = summarize(data["runs"])
        shown = args.render.resolve()
        section = results_section(data, str(shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown))
        print(section)
        if not args.no_doc:
            update_doc(args.doc, section)
        return 0

    global SOURCE
    export = None
    if args.rev:
        export = tempfile.TemporaryDirectory(prefix="deploy-bench-src-")
        SOURCE = Path(export.name)
        source = {"rev": args.rev, "commit": export_source(args.rev, SOURCE)}
    else:
        source = {"rev": None, "commit": git("rev-parse", "HEAD"),
                  "uncommitted_changes_in_clusterserve": bool(git("status", "--porcelain", "--", "clusterserve"))}
    peers = ensure_venv() if any(SPEC_BY_NAME[n].kind == "gunicorn" for n in args.servers) else {}
    subreaper = become_subreaper()
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([".venv/bin/python", "bench/deploy.py", *sys.argv[1:]]),
        "reps": args.reps,
        "source": source,
        "subreaper": subreaper,
        "machine": machine(),
        "settings": {"workers": WORKERS, "clients": CLIENTS, "common_flags": list(COMMON_FLAGS),
                     "step_gap": STEP_GAP, "kill_window": KILL_WINDOW, "io_timeout": IO_TIMEOUT},
    }
    plan = []
    names = [n for n in SPEC_BY_NAME if n in args.servers]
    for rep in range(args.reps):
        for scenario in args.scenarios:
            order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: each server leads once
            plan += [(rep, scenario, name) for name in order]
    runs: list[dict[str, Any]] = []
    began = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"deploy-{started.strftime('%Y%m%d-%H%M%S')}.json"
    for index, (rep, scenario, name) in enumerate(plan, 1):
        result = SCENARIOS[scenario](SPEC_BY_NAME[name])
        result["rep"] = rep
        runs.append(result)
        partial = {"meta": {**meta, "complete": False}, "peers": peers, "runs": runs}
        path.write_text(json.dumps(partial, indent=1) + "\n")  # a crash or ^C keeps what ran so far
        print(f"[{index}/{len(plan)} {time.monotonic() - began:5.0f}s] {scenario:6} {name:28} "
              f"ok={result.get('ok')} failed={result.get('failed')} (after kill {result.get('failed_after_kill', 0)}) "
              f"retried={result.get('retried')} 5xx={result.get('status_5xx')} "
              f"new={result.get('new_version_served')}"
              + (f" ERROR {result['error'][:300]}" if "error" in result else "")
              + ("" if result["stop"]["stopped_cleanly"] else f" (stop: {result['stop']})"), flush=True)
        for sent_at, failed_at, what in result.get("failures", [])[:3]:
            print(f"      failure: sent at {sent_at:.2f}s, failed at {failed_at:.2f}s: {what}", flush=True)
    meta["took_seconds"] = round(time.monotonic() - began, 1)
    if export is not None:
        export.cleanup()
    data = {"meta": {**meta, "complete": True}, "peers": peers, "runs": runs, "summary": summarize(runs)}
    path.write_text(json.dumps(data, indent=1) + "\n")
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(ROOT)
    section = results_section(data, str(path))
    print(section)
    if not args.no_doc:
        update_doc(args.doc, section)
    print(f"\nwrote {path}" + ("" if args.no_doc else f" and {args.doc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
