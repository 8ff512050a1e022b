"""Fault injection under load: whatever happens to its workers, the arbiter stays and recovers.

```
.venv/bin/python -m bench.faults                                  # every mode and interface, 60 s each
.venv/bin/python -m bench.faults --modes shared --interfaces wsgi --seconds 20 --seed 1234
```

One server per dispatch mode and interface (``tests.apps.faulty``, 4 workers,
``--timeout 3``, a soft open-file limit of ``OPEN_FILES`` (256) for the whole
run, its error and access logs on a small tmpfs of its own), client threads
sending requests in a closed loop (keep-alive or a new connection each, chosen
at random; some take 0.2 s, some write to ``wsgi.errors``), and one injector
that picks faults at random, one after another:

- signals to a worker: SIGKILL, SIGSEGV, SIGSTOP then SIGCONT 0.5 to 5 s later
  (3 s or more without a heartbeat and the arbiter aborts it), SIGRTMIN+n;
- signals to the arbiter: HUP, TTIN, TTOU (the count stays between 2 and 6), USR1;
- app faults: a worker that exits on its own, a request that hangs (the worker
  is aborted), a worker that leaks past ``max_worker_memory`` (it is replaced),
  and a HUP to an app that raises at import (the old workers stay);
- the environment: garbage on the control socket; ``disk_full``: the log tmpfs
  filled to the last page for 0.5 to 3 s, then freed (a request's access line
  must then reach the file within 5 s, and the arbiter's last line the error
  log); ``idle_flood``: 1.5 times the open-file limit per worker of connections
  that send nothing, held 1 to 3 s; ``slow_readers``: 2 to 4 clients reading a
  16 MiB response at about 320 KB/s for 2 to 4 s (their requests count as
  any other).  These are dealt twice as often as the rest (``DECK``); near
  the end of the run, one lasts only what is left of it (at least its minimum).

Mounting the tmpfs needs root (CAP_SYS_ADMIN); without it the logs go to
stderr, ``disk_full`` is left out, and the run says why once.

After each fault the injector waits until ``clusterserve ctl status`` shows the
wanted number of workers serving (at most ``RECOVERY_WAIT`` seconds).

What counts: the arbiter must never exit; the worker count must come back
after every fault; the arbiter must log no contained error (``... failed; the
arbiter goes on``; one lost to the full disk is read from stderr, where
``logging`` reports it); the logs must resume once the disk has room; and no
request may fail (no response within the client's 10 s, or a 5xx), except one
that was on a connection held by a worker the fault killed.  Which connections
a worker held is read from ``/proc`` until it is gone.  A request on a
keep-alive connection that the server closed before answering is sent again
on a new connection, as HTTP clients do.  The slowest request during each
environment fault is printed, as evidence that none stalls the others.

The seed is printed first; the same seed replays the same faults in the same
order on the same worker indexes (the timing, and so the requests, differ;
a fault left out changes the order).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.dispatch import client_ports_held_by
from tests.harness import ServerProcess

WORKERS = 4
CLIENTS = 4
CLIENT_TIMEOUT = 10.0
RECOVERY_WAIT = 20.0
TIMEOUT = 3  # the server's heartbeat timeout, and when a request counts as stuck
MODES = ("shared", "round-robin", "reuseport")
INTERFACES = ("wsgi", "asgi")
ENVIRONMENT_FAULTS = ("disk_full", "idle_flood", "slow_readers")
FAULTS = ("kill", "segv", "stop", "rt", "hup", "ttin", "ttou", "usr1", "control_garbage",
          "app_exit", "app_hang", "app_leak", "hup_broken_app", *ENVIRONMENT_FAULTS)
# What the injector deals from, shuffled: the environment faults twice, so that a run of a
# few seconds (a handful of faults) meets one more often than not.
DECK = (*FAULTS, *ENVIRONMENT_FAULTS)
ARBITER_TROUBLE = ("the arbiter goes on", "keeps failing", "Cannot go on")
OPEN_FILES = 256  # the server's soft RLIMIT_NOFILE, for the whole run (as ``ulimit -n 256``)
FLOOD_FACTOR = 1.5  # idle connections per descriptor the server may have, per worker
LOG_DISK_SIZE = 8 << 20  # the log tmpfs: this much, and room for LOG_PER_SECOND per second of the run
LOG_PER_SECOND = 256 << 10
LOG_LANDS = 5.0  # seconds for a line to reach the log file once the disk has room again
SLOW_READ = 16 << 10  # a slow reader reads this many bytes, then waits SLOW_READ_PAUSE seconds
SLOW_READ_PAUSE = 0.05
LARGE_MB = 16  # the response slow readers ask for


@dataclass
class Request:
    started: float
    ended: float
    port: int  # the client's port (0: it never connected)
    error: str | None  # None: answered, and not with a 5xx
    path: str = "/"


@dataclass
class Victim:
    """A worker a fault killed, and the client ports of the connections it held meanwhile."""

    pid: int
    since: float
    until: float = float("inf")
    ports: set[int] = field(default_factory=set)


@dataclass
class Outcome:
    mode: str
    interface: str
    seed: int
    seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    failed: list[Request] = field(default_factory=list)  # not excused
    excused: int = 0
    arbiter_exit: int | None = None  # its exit code, if it exited during the run
    stop_code: int | None = None  # its exit code after the final SIGTERM (0 expected)
    not_recovered: list[str] = field(default_factory=list)
    timeline: list[tuple[float, float, str]] = field(default_factory=list)  # (began, ended, fault)
    arbiter_trouble: list[str] = field(default_factory=list)
    not_logged: list[str] = field(default_factory=list)  # lines that never reached a log file
    left_out: dict[str, str] = field(default_factory=dict)  # fault: why this run cannot inject it
    slowest: dict[str, float] = field(default_factory=dict)  # environment fault: slowest request

    def fault_before(self, moment: float) -> str:
        earlier = [(began, name) for began, _, name in self.timeline if began <= moment]
        return f"{earlier[-1][1]}, {moment - earlier[-1][0]:.2f}s before" if earlier else "none"

    def note_slowest(self, requests: list[Request]) -> None:
        """The slowest request (but those meant to be slow) during each environment fault."""
        for began, ended, name in self.timeline:
            if name in ENVIRONMENT_FAULTS:
                during = [r.ended - r.started for r in requests
                          if not r.path.startswith("/slow") and r.started <= ended and r.ended >= began]
                self.slowest[name] = max([self.slowest.get(name, 0.0), *during])

    @property
    def ok(self) -> bool:
        return (self.arbiter_exit is None and self.stop_code == 0 and not self.failed
                and not self.not_recovered and not self.arbiter_trouble and not self.not_logged)

    def summary(self) -> str:
        faults = ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items())) or "none"
        slowest = "".join(f"; slowest request during {name}: {seconds:.2f}s"
                          for name, seconds in sorted(self.slowest.items()))
        left_out = f"; left out: {', '.join(sorted(self.left_out))}" if self.left_out else ""
        return (f"{self.mode}/{self.interface} seed {self.seed}: {sum(self.faults.values())} faults "
                f"({faults}); {self.requests} requests, {len(self.failed)} failed, {self.excused} "
                f"excused (in flight on a killed worker); arbiter exits: "
                f"{0 if self.arbiter_exit is None else 1}; recoveries missed: {len(self.not_recovered)}; "
                f"log lines lost after the disk had room: {len(self.not_logged)}{slowest}{left_out}; "
                f"replay: python -m bench.faults --modes {self.mode} --interfaces {self.interface} "
                f"--seconds {self.seconds:g} --seed {self.seed}")


class Clients:
    """Threads that send requests in a closed loop until told to stop."""

    def __init__(self, port: int, count: int, seed: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: list[Request] = []
        self.threads = [threading.Thread(target=self._loop, args=(random.Random(seed * 1000 + index),),
                                         daemon=True) for index in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> list[Request]:
        self.stop.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT + 5)
        return self.done

    def _loop(self, rng: random.Random) -> None:
        conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + 3600
        while not self.stop.is_set() and time.monotonic() < deadline:
            if conn is None or rng.random() < 0.5:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
            draw = rng.random()
            path = "/slow?seconds=0.2" if draw < 0.1 else "/note" if draw < 0.2 else "/"
            request, conn = self._send(conn, path)
            with self.lock:
                self.done.append(request)

    def _send(self, conn: http.client.HTTPConnection, path: str,
              ) -> tuple[Request, http.client.HTTPConnection | None]:
        started = time.monotonic()
        reused = conn.sock is not None
        port = 0
        try:
            if conn.sock is None:
                conn.connect()
            port = conn.sock.getsockname()[1]
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
            conn.close()
            if reused:  # closed by the server while idle: send it again, on a new connection
                fresh = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
                return self._send(fresh, path)
            return Request(started, time.monotonic(), port, type(err).__name__, path), None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            return Request(started, time.monotonic(), port, type(err).__name__, path), None
        error = f"status {response.status}" if response.status >= 500 else None
        done = Request(started, time.monotonic(), port, error, path)
        if response.will_close:
            conn.close()
            return done, None
        return done, conn


class LogDisk:
    """A small tmpfs of its own for the server's error and access logs, which ``disk_full``
    fills.  Mounting needs root (CAP_SYS_ADMIN); ``mount`` says why when it cannot."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.error_log = path / "error.log"
        self.access_log = path / "access.log"
        self.filler = path / "filler"
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; None, or why it cannot be had."""
        self.path.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700",
                                   "clusterserve-faults", str(self.path)],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"cannot run mount: {err}"
        if done.returncode != 0:  # said without this run's path, the same in every run
            said = (done.stderr.strip().splitlines() or [f"mount exited with {done.returncode}"])[0]
            return said.replace(str(self.path), "DIR")
        self.mounted = True
        return None

    def unmount(self) -> None:
        if self.mounted:  # lazily: a process that is still dying may hold a log file open
            subprocess.run(["umount", "--lazy", str(self.path)], capture_output=True, timeout=10)
            self.mounted = False

    def fill(self) -> None:
        """Write until the disk refuses (ENOSPC): then not a page is left."""
        chunk = bytes(1 << 20)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, chunk)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


class Injector:
    """Picks faults at random, applies them one at a time, and checks recovery after each."""

    def __init__(self, server: ServerProcess, workdir: Path, rng: random.Random, outcome: Outcome,
                 log_disk: LogDisk | None) -> None:
        self.server = server
        self.control = workdir / "ctl"
        self.marker = workdir / "broken"
        self.exit_report = workdir / "exits"
        self.rng = rng
        self.outcome = outcome
        self.log_disk = log_disk
        self.wanted = WORKERS
        self.deadline = float("inf")
        self.victims: list[Victim] = []
        self.own_requests: list[Request] = []  # those a fault makes itself (slow readers)
        self.lock = threading.Lock()
        self.actions: dict[str, Callable[[], None]] = {name: getattr(self, f"_{name}") for name in FAULTS}

    def run(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        deck = [name for name in DECK if name not in self.outcome.left_out]
        order: list[str] = []
        while time.monotonic() < self.deadline and self.server.proc.poll() is None:
            if not order:
                order = list(deck)
                self.rng.shuffle(order)
            name = order.pop()
            if (name == "ttin" and self.wanted >= 6) or (name == "ttou" and self.wanted <= 2):
                continue
            self.outcome.faults[name] += 1
            began = time.monotonic()
            self.actions[name]()
            self.outcome.timeline.append((began, time.monotonic(), name))
            self._wait_for_recovery(name)
            time.sleep(self.rng.uniform(0.1, 0.5))

    # -- worker signals ---------------------------------------------------------

    def _pick_worker(self) -> int:
        workers = sorted(self._serving())
        return workers[self.rng.randrange(len(workers))] if workers else 0

    def _signal_and_watch(self, sig: int) -> None:
        """Stopped first, so that the connections read from /proc are exactly those it dies with;
        the signal then acts as the worker resumes."""
        pid = self._pick_worker()
        if not pid:
            return
        victim = Victim(pid, time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            victim.ports = client_ports_held_by(pid, self.server.port)
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)
        self._watch(victim, 5.0)

    def _kill(self) -> None:
        self._signal_and_watch(signal.SIGKILL)

    def _segv(self) -> None:
        self._signal_and_watch(signal.SIGSEGV)

    def _rt(self) -> None:
        self._signal_and_watch(signal.SIGRTMIN + self.rng.randrange(9))

    def _stop(self) -> None:
        """Short enough that no heartbeat is missed, or long enough to be killed while stopped
        (aborted at TIMEOUT, killed 2 s later): never resumed just as it is aborted."""
        pid = self._pick_worker()
        if not pid:
            return
        hold = self.rng.choice([self.rng.uniform(0.3, 1.8), TIMEOUT + 5.0])
        victim = Victim(pid, time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        self._watch(victim, hold)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        if victim not in self.victims:  # it may still be aborted for the heartbeats it missed
            self._watch(victim, 5.0)

    def _watch(self, victim: Victim, seconds: float) -> None:
        """Note the connections ``victim`` holds until it is gone (then it was killed) or
        ``seconds`` pass (then it lives on, and its requests must succeed)."""
        deadline = time.monotonic() + seconds
        while True:
            gone = not _alive(victim.pid)
            if gone:
                victim.until = time.monotonic()
                self.victims.append(victim)
                return
            victim.ports |= client_ports_held_by(victim.pid, self.server.port)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    # -- arbiter signals ----------------------------------------------------------

    def _hup(self) -> None:
        self.server.send(signal.SIGHUP)  # the count TTIN and TTOU set survives it
        time.sleep(0.5)

    def _ttin(self) -> None:
        self.server.send(signal.SIGTTIN)
        self.wanted += 1

    def _ttou(self) -> None:
        self.server.send(signal.SIGTTOU)
        self.wanted -= 1

    def _usr1(self) -> None:
        self.server.send(signal.SIGUSR1)

    def _control_garbage(self) -> None:
        payloads = [bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 300))),
                    b"{" * 5000 + b"\n", b"x" * 20000, b'{"command": "scale", "workers": "all"}\n',
                    b'{"command": "status", "and": "more"}\n', b"[1, 2, 3]\n", b"\n",
                    b'{"command": null}\n']
        for payload in self.rng.sample(payloads, 3):
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.control))
                sock.sendall(payload)
                with contextlib.suppress(OSError):
                    sock.recv(4096)

    # -- app faults -------------------------------------------------------------------

    def _app_exit(self) -> None:
        """The app reports the connections it cuts off (it alone knows them exactly)."""
        since = time.monotonic()
        _fetch(self.server.port, "/exit")  # never answered
        with contextlib.suppress(FileNotFoundError):
            for line in self.exit_report.read_text().splitlines():
                pid, *ports = map(int, line.split())
                self.victims.append(Victim(pid, since, time.monotonic(), set(ports)))
            self.exit_report.unlink()

    def _app_hang(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: faults\r\n\r\n")
            own_port = sock.getsockname()[1]
            victim = self._holder_of(own_port)
            if victim is not None:
                self._watch(victim, TIMEOUT + 10.0)

    def _holder_of(self, port: int) -> Victim | None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for pid in self._serving():
                if port in client_ports_held_by(pid, self.server.port):
                    return Victim(pid, time.monotonic())
            time.sleep(0.05)
        return None

    def _app_leak(self) -> None:
        _fetch(self.server.port, "/leak")

    def _hup_broken_app(self) -> None:
        before = len(self.server.log())
        self.marker.touch()
        try:
            self.server.send(signal.SIGHUP)
            with contextlib.suppress(AssertionError):
                self.server.wait_for_log(r"SIGHUP: generation \d+ failed to boot", timeout=15, after=before)
        finally:
            self.marker.unlink()

    # -- the environment ----------------------------------------------------------------

    def _hold(self, shortest: float, longest: float) -> float:
        """How long an environment fault lasts: at random, but near the end of the run
        only what is left of it (at least ``shortest``), so that a short run ends on time."""
        wanted = self.rng.uniform(shortest, longest)
        return max(shortest, min(wanted, self.deadline - time.monotonic()))

    def _disk_full(self) -> None:
        """Fill the log disk, hold it full under load, free it: the server must serve all
        along, and its next lines must reach the log files."""
        assert self.log_disk is not None
        try:
            self.log_disk.fill()
            time.sleep(self._hold(0.5, 3.0))
        finally:
            self.log_disk.free()
        count = self.outcome.faults["disk_full"]
        access_log = self.log_disk.access_log
        after = access_log.stat().st_size if access_log.exists() else 0
        marker = f"/?logged-after-disk-full={count}"
        _fetch(self.server.port, marker)
        if not _appears(access_log, after, marker.encode(), LOG_LANDS):
            self.outcome.not_logged.append(f"the access line of GET {marker}, {LOG_LANDS:g}s after "
                                           f"the disk had room again")

    def _idle_flood(self) -> None:
        """More connections that send nothing than every worker together may hold (each
        would get FLOOD_FACTOR times its open-file limit), held 1 to 3 s, then closed."""
        hold = self._hold(1.0, 3.0)
        flood: list[socket.socket] = []
        try:
            for _ in range(round(FLOOD_FACTOR * OPEN_FILES * self.wanted)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                flood.append(sock)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", self.server.port))  # what the backlogs take
            time.sleep(hold)
        finally:
            for sock in flood:
                sock.close()

    def _slow_readers(self) -> None:
        """A few clients ask for a large response and read it slowly for 2 to 4 s."""
        count, seconds = self.rng.randint(2, 4), self._hold(2.0, 4.0)
        readers = [threading.Thread(target=self._read_slowly, args=(seconds,), daemon=True)
                   for _ in range(count)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(seconds + CLIENT_TIMEOUT + 5)

    def _read_slowly(self, seconds: float) -> None:
        """Its request counts as any other: answered (the head, not a 5xx) within the
        client's timeout, or failed."""
        started = time.monotonic()
        port, error, head, answered = 0, None, b"", 0.0
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READ)
                sock.settimeout(CLIENT_TIMEOUT)
                sock.connect(("127.0.0.1", self.server.port))
                port = sock.getsockname()[1]
                sock.sendall(f"GET /large?mb={LARGE_MB} HTTP/1.1\r\nHost: faults\r\n\r\n".encode())
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    data = sock.recv(SLOW_READ)
                    if not data:
                        break
                    if not head:
                        head = data[:12]
                        answered = time.monotonic()
                    time.sleep(SLOW_READ_PAUSE)
        except OSError as err:
            error = type(err).__name__
        if error is None and not head.startswith(b"HTTP/1.1 200"):
            error = f"answered {head!r}" if head else "no answer"
        with self.lock:
            self.own_requests.append(Request(started, answered if head else time.monotonic(), port,
                                             error, "/large"))

    # -- checks ---------------------------------------------------------------------

    def _serving(self) -> list[int]:
        """Workers that are up and not on their way out, from the control socket."""
        status = self._status()
        return [w["pid"] for w in status["workers"] if w["state"] == "serving"] if status else []

    def _status(self) -> dict | None:
        with contextlib.suppress(OSError, ValueError, KeyError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.control))
            sock.sendall(b'{"command": "status"}\n')
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                reply += chunk
            return json.loads(reply)["status"]
        return None

    def _wait_for_recovery(self, fault: str) -> None:
        deadline = time.monotonic() + RECOVERY_WAIT
        while time.monotonic() < deadline:
            if self.server.proc.poll() is not None:
                return
            status = self._status()
            if status is not None and status["workers_wanted"] == self.wanted and \
                    [w["state"] for w in status["workers"]] == ["serving"] * self.wanted:
                return
            time.sleep(0.1)
        self.outcome.not_recovered.append(f"after {fault}: {self._status()}")


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _appears(path: Path, offset: int, text: bytes, seconds: float) -> bool:
    """Whether ``text`` is in the file ``path`` past ``offset`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(FileNotFoundError), path.open("rb") as stream:
            stream.seek(offset)
            if text in stream.read():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _fetch(port: int, path: str) -> str | None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            return conn.getresponse().read().decode()
        finally:
            conn.close()
    return None


def run(mode: str, interface: str, seconds: float, seed: int, workdir: Path) -> Outcome:
    """One server under load and faults for ``seconds``; the outcome, with every count."""
    outcome = Outcome(mode, interface, seed, seconds)
    core_limit = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core_limit[1]))  # SIGSEGV leaves no core files
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    workdir = workdir / f"{mode}-{interface}"
    workdir.mkdir()
    log_disk: LogDisk | None = LogDisk(workdir / "logs", LOG_DISK_SIZE + round(seconds * LOG_PER_SECOND))
    server = ServerProcess([f"tests.apps.faulty:{interface}", "-w", str(WORKERS), "--dispatch", mode,
                            "--timeout", str(TIMEOUT), "--graceful-timeout", "5", "--keep-alive", "5",
                            "--max-worker-memory", "80MB", "--control-socket", str(workdir / "ctl")],
                           env={"FAULTY_BROKEN_MARKER": str(workdir / "broken"),
                                "FAULTY_EXIT_REPORT": str(workdir / "exits")},
                           open_files=OPEN_FILES)
    try:
        refused = log_disk.mount()
        if refused is None:
            server.args += ["--error-logfile", str(log_disk.error_log),
                            "--access-logfile", str(log_disk.access_log)]
            server.log_path = log_disk.error_log
        else:
            outcome.left_out["disk_full"] = f"cannot mount a tmpfs for the logs: {refused}"
            log_disk = None
        refused = _allow_open_files(round(FLOOD_FACTOR * OPEN_FILES * 6) + 1024)  # 6: TTIN's most
        if refused is not None:
            outcome.left_out["idle_flood"] = refused
        server.start(wait_ready=WORKERS, timeout=30)
        clients = Clients(server.port, CLIENTS, seed)
        clients.start()
        injector = Injector(server, workdir, random.Random(seed), outcome, log_disk)
        injector.run(seconds)
        requests = clients.finish()
        outcome.arbiter_exit = server.proc.poll()
        outcome.requests = len(requests) + len(injector.own_requests)
        for request in requests + injector.own_requests:
            if request.error is None:
                continue
            if any(request.port in v.ports and request.started <= v.until and request.ended >= v.since
                   for v in injector.victims):
                outcome.excused += 1
            else:
                outcome.failed.append(request)
        outcome.note_slowest(requests)
        if outcome.arbiter_exit is None:
            outcome.stop_code = server.stop(timeout=20)
        arbiter = f"[{server.pid}] "
        # Lines logged while the disk was full are lost, but logging says so on stderr,
        # with each lost line's message.
        outcome.arbiter_trouble = [line for line in server.log().splitlines()
                                   if arbiter in line and any(t in line for t in ARBITER_TROUBLE)]
        if log_disk is not None:
            outcome.arbiter_trouble += [
                line for line in Path(server.log_file.name).read_text(errors="replace").splitlines()
                if line.startswith("Message: ") and any(t in line for t in ARBITER_TROUBLE)]
            if outcome.stop_code == 0 and f"{arbiter}[INFO] Shutting down" not in server.log():
                outcome.not_logged.append("the arbiter's last line (Shutting down) in the error log")
    finally:
        server.kill_all()
        if log_disk is not None:
            log_disk.unmount()
        resource.setrlimit(resource.RLIMIT_CORE, core_limit)
        resource.setrlimit(resource.RLIMIT_NOFILE, open_files)
        with contextlib.suppress(OSError):
            os.unlink(server.log_file.name)
    return outcome


def _allow_open_files(needed: int) -> str | None:
    """Raise this process's soft open-file limit to ``needed`` (the flood's sockets); None,
    or why it cannot be had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return f"this process may open only {hard} files, the flood needs {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--interfaces", nargs="+", choices=INTERFACES, default=list(INTERFACES))
    parser.add_argument("--seconds", type=float, default=60.0, help="of faults, per mode and interface")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed by every run)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"fault injection: seed {seed}", flush=True)
    failed = False
    said: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="clusterserve-faults-") as workdir:
        for mode in args.modes:
            for interface in args.interfaces:
                outcome = run(mode, interface, args.seconds, seed, Path(workdir))
                for name, why in sorted(outcome.left_out.items()):
                    if name not in said:
                        said.add(name)
                        print(f"{name} left out: {why}", flush=True)
                print(outcome.summary(), flush=True)
                for request in outcome.failed[:10]:
                    print(f"  failed: {request}; last fault before: {outcome.fault_before(request.ended)}")
                for missed in outcome.not_recovered[:5]:
                    print(f"  not recovered {missed}")
                for line in outcome.arbiter_trouble[:5]:
                    print(f"  arbiter: {line}")
                for line in outcome.not_logged[:5]:
                    print(f"  never logged: {line}")
                failed = failed or not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
