"""Fault injection under load: whatever happens to its workers, the arbiter stays and recovers.

```
.venv/bin/python -m bench.faults                                  # every mode and interface, 60 s each
.venv/bin/python -m bench.faults --modes shared --interfaces wsgi --seconds 20 --seed 1234
```

One server per dispatch mode and interface (``tests.apps.faulty``, 4 workers,
``--timeout 3``), client threads sending requests in a closed loop (keep-alive
or a new connection each, chosen at random), and one injector that picks
faults at random, one after another:

- signals to a worker: SIGKILL, SIGSEGV, SIGSTOP then SIGCONT 0.5 to 5 s later
  (3 s or more without a heartbeat and the arbiter aborts it), SIGRTMIN+n;
- signals to the arbiter: HUP, TTIN, TTOU (the count stays between 2 and 6), USR1;
- app faults: a worker that exits on its own, a request that hangs (the worker
  is aborted), a worker that leaks past ``max_worker_memory`` (it is replaced),
  and a HUP to an app that raises at import (the old workers stay);
- garbage on the control socket.

After each fault the injector waits until ``clusterserve ctl status`` shows the
wanted number of workers serving (at most ``RECOVERY_WAIT`` seconds).

What counts: the arbiter must never exit; the worker count must come back
after every fault; the arbiter must log no contained error (``... failed; the
arbiter goes on``); and no request may fail (no response within the client's
10 s, or a 5xx), except one that was on a connection held by a worker the
fault killed.  Which connections a worker held is read from ``/proc`` until it
is gone.  A request on a keep-alive connection that the server closed before
answering is sent again on a new connection, as HTTP clients do.

The seed is printed first; the same seed replays the same faults in the same
order on the same worker indexes (the timing, and so the requests, differ).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import resource
import signal
import socket
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
FAULTS = ("kill", "segv", "stop", "rt", "hup", "ttin", "ttou", "usr1", "control_garbage",
          "app_exit", "app_hang", "app_leak", "hup_broken_app")
ARBITER_TROUBLE = ("the arbiter goes on", "keeps failing", "Cannot go on")


@dataclass
class Request:
    started: float
    ended: float
    port: int  # the client's port (0: it never connected)
    error: str | None  # None: answered, and not with a 5xx


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
    timeline: list[tuple[float, str]] = field(default_factory=list)  # when each fault began
    arbiter_trouble: list[str] = field(default_factory=list)

    def fault_before(self, moment: float) -> str:
        earlier = [(at, name) for at, name in self.timeline if at <= moment]
        return f"{earlier[-1][1]}, {moment - earlier[-1][0]:.2f}s before" if earlier else "none"

    @property
    def ok(self) -> bool:
        return (self.arbiter_exit is None and self.stop_code == 0 and not self.failed
                and not self.not_recovered and not self.arbiter_trouble)

    def summary(self) -> str:
        faults = ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items())) or "none"
        return (f"{self.mode}/{self.interface} seed {self.seed}: {sum(self.faults.values())} faults "
                f"({faults}); {self.requests} requests, {len(self.failed)} failed, {self.excused} "
                f"excused (in flight on a killed worker); arbiter exits: "
                f"{0 if self.arbiter_exit is None else 1}; recoveries missed: {len(self.not_recovered)}; "
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
            path = "/slow?seconds=0.2" if rng.random() < 0.1 else "/"
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
            return Request(started, time.monotonic(), port, type(err).__name__), None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            return Request(started, time.monotonic(), port, type(err).__name__), None
        error = f"status {response.status}" if response.status >= 500 else None
        if response.will_close:
            conn.close()
            return Request(started, time.monotonic(), port, error), None
        return Request(started, time.monotonic(), port, error), conn


class Injector:
    """Picks faults at random, applies them one at a time, and checks recovery after each."""

    def __init__(self, server: ServerProcess, workdir: Path, rng: random.Random, outcome: Outcome) -> None:
        self.server = server
        self.control = workdir / "ctl"
        self.marker = workdir / "broken"
        self.exit_report = workdir / "exits"
        self.rng = rng
        self.outcome = outcome
        self.wanted = WORKERS
        self.victims: list[Victim] = []
        self.actions: dict[str, Callable[[], None]] = {name: getattr(self, f"_{name}") for name in FAULTS}

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        order: list[str] = []
        while time.monotonic() < deadline and self.server.proc.poll() is None:
            if not order:
                order = list(FAULTS)
                self.rng.shuffle(order)
            name = order.pop()
            if (name == "ttin" and self.wanted >= 6) or (name == "ttou" and self.wanted <= 2):
                continue
            self.outcome.faults[name] += 1
            self.outcome.timeline.append((time.monotonic(), name))
            self.actions[name]()
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
    workdir = workdir / f"{mode}-{interface}"
    workdir.mkdir()
    server = ServerProcess([f"tests.apps.faulty:{interface}", "-w", str(WORKERS), "--dispatch", mode,
                            "--timeout", str(TIMEOUT), "--graceful-timeout", "5", "--keep-alive", "5",
                            "--max-worker-memory", "80MB", "--control-socket", str(workdir / "ctl")],
                           env={"FAULTY_BROKEN_MARKER": str(workdir / "broken"),
                                "FAULTY_EXIT_REPORT": str(workdir / "exits")})
    try:
        server.start(wait_ready=WORKERS, timeout=30)
        clients = Clients(server.port, CLIENTS, seed)
        clients.start()
        injector = Injector(server, workdir, random.Random(seed), outcome)
        injector.run(seconds)
        requests = clients.finish()
        outcome.arbiter_exit = server.proc.poll()
        outcome.requests = len(requests)
        for request in requests:
            if request.error is None:
                continue
            if any(request.port in v.ports and request.started <= v.until and request.ended >= v.since
                   for v in injector.victims):
                outcome.excused += 1
            else:
                outcome.failed.append(request)
        arbiter = f"[{server.pid}] "
        outcome.arbiter_trouble = [line for line in server.log().splitlines()
                                   if arbiter in line and any(t in line for t in ARBITER_TROUBLE)]
        if outcome.arbiter_exit is None:
            outcome.stop_code = server.stop(timeout=20)
    finally:
        server.kill_all()
        resource.setrlimit(resource.RLIMIT_CORE, core_limit)
        with contextlib.suppress(OSError):
            os.unlink(server.log_file.name)
    return outcome


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
    with tempfile.TemporaryDirectory(prefix="clusterserve-faults-") as workdir:
        for mode in args.modes:
            for interface in args.interfaces:
                outcome = run(mode, interface, args.seconds, seed, Path(workdir))
                print(outcome.summary(), flush=True)
                for request in outcome.failed[:10]:
                    print(f"  failed: {request}; last fault before: {outcome.fault_before(request.ended)}")
                for missed in outcome.not_recovered[:5]:
                    print(f"  not recovered {missed}")
                for line in outcome.arbiter_trouble[:5]:
                    print(f"  arbiter: {line}")
                failed = failed or not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
