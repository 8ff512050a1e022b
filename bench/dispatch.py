#!/usr/bin/env python3
"""Compare the three dispatch modes: spread, long-lived connections, skew, overhead, loss.

Run from the repository root (see bench/README.md):

    .venv/bin/python bench/dispatch.py            # the working tree
    .venv/bin/python bench/dispatch.py --rev HEAD # a commit, exported to a temp dir

Every server is a real ``python -m clusterserve bench.apps:app -w 4`` on
127.0.0.1, started and stopped with tests/harness.py.  The load generator
is this process (threads, raw sockets) except for the requests-per-second
runs, which use ``wrk`` (installed with apt-get when missing; ``--loadgen
python`` avoids it).  With two or more CPUs the load generator is pinned to
the first and the server to the others.  Every loop is bounded in count
and time.  One JSON file per run goes to bench/results/, and a Markdown
summary is printed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import ServerProcess  # noqa: E402 - after sys.path gets the checkout

MODES = ("shared", "round-robin", "reuseport")
SECTIONS = ("spread", "long_lived", "long_lived_asgi", "skew", "overhead", "loss", "young_kill")
APP = "bench.apps:app"
ASGI_APP = "bench.apps:asgi_app"
WORKERS = 4
HOST = "127.0.0.1"
IO_TIMEOUT = 10.0
EXIT_LINE = re.compile(r"\(pid (\d+)\) (?:exited with code -?\d+|was killed by \w+)"
                       r" after (\d+) connections and (\d+) requests")


class BadResponse(Exception):
    """The server closed or answered something other than 200."""


# -- CPU pinning ------------------------------------------------------------------


class Pinning:
    """The load generator on the first CPU, the server (arbiter and its forks) on the rest.

    ``sched_setaffinity(0, ...)`` sets the calling thread's mask; threads and
    processes started later inherit it.  The main thread switches to the
    server's CPUs only while it starts a server.
    """

    def __init__(self, enabled: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.enabled = enabled and len(cpus) >= 2
        self.client = {cpus[0]} if self.enabled else set(cpus)
        self.server = set(cpus[1:]) if self.enabled else set(cpus)

    def pin_client(self) -> None:
        os.sched_setaffinity(0, self.client)

    @contextlib.contextmanager
    def for_server(self) -> Iterator[None]:
        os.sched_setaffinity(0, self.server)
        try:
            yield
        finally:
            os.sched_setaffinity(0, self.client)

    def describe(self) -> str:
        if not self.enabled:
            return "not pinned"
        return f"load generator on CPU {sorted(self.client)}, server on CPU {sorted(self.server)}"


# -- servers ------------------------------------------------------------------------


class Bench:
    def __init__(self, pin: Pinning, source: Path) -> None:
        self.pin = pin
        self.source = source

    @contextlib.contextmanager
    def server(self, mode: str, *extra: str, app: str = APP) -> Iterator[ServerProcess]:
        proc = ServerProcess([app, "-w", str(WORKERS), "--dispatch", mode, *extra], cwd=self.source)
        try:
            with self.pin.for_server():
                proc.start(wait_ready=WORKERS)
            yield proc
        finally:
            stop(proc)


def stop(proc: ServerProcess) -> str:
    """Stop gracefully (SIGTERM), kill what is left, and return the whole log."""
    text = getattr(proc, "final_log", None)
    if text is not None:
        return text
    try:
        if proc.proc is not None:
            proc.stop(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    finally:
        proc.kill_all()
    text = proc.log()
    proc.final_log = text  # type: ignore[attr-defined]  # kept for the report once the process is gone
    with contextlib.suppress(OSError):
        os.unlink(proc.log_file.name)
    return text


def exit_counters(log_text: str) -> dict[int, dict[str, int]]:
    """Per-worker counters from the workers' exit lines."""
    return {int(pid): {"connections": int(conns), "requests": int(reqs)}
            for pid, conns, reqs in EXIT_LINE.findall(log_text)}


# -- HTTP over raw sockets --------------------------------------------------------------


def request_bytes(path: str, close: bool) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()


def pid_of(response: bytes) -> int:
    if not response.startswith(b"HTTP/1.1 200 "):
        raise BadResponse(response[:60])
    return int(response.rsplit(None, 1)[-1])


def fetch(port: int, path: str = "/", timeout: float = IO_TIMEOUT) -> int:
    """One request on a new connection (Connection: close); the pid that answered."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request_bytes(path, close=True))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return pid_of(b"".join(chunks))


class Client:
    """One connection that can carry several requests (keep-alive)."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = b""

    def send(self, path: str = "/", close: bool = False) -> None:
        self.sock.sendall(request_bytes(path, close))

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BadResponse(b"connection closed before a response")
        self.buffer += chunk

    def receive(self) -> int:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match is None:
            raise BadResponse(head[:60])
        length = int(match.group(1))
        self.buffer = rest
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return pid_of(head + b"\r\n\r\n" + body)

    def close(self) -> None:
        self.sock.close()


def error_name(err: BaseException) -> str:
    return type(err).__name__


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# -- the measurements ------------------------------------------------------------------


def measure_spread(port: int, total: int = 2000, clients: int = 16, limit_s: float = 60.0) -> dict[str, Any]:
    """``total`` requests, each on a new connection, from ``clients`` threads."""
    deadline = time.monotonic() + limit_s

    def one(_: int) -> int | str:
        if time.monotonic() > deadline:
            return "skipped"
        try:
            return fetch(port)
        except (OSError, BadResponse) as err:
            return error_name(err)

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(total)))
    elapsed = time.monotonic() - started
    per_pid = collections.Counter(o for o in outcomes if isinstance(o, int))
    errors = collections.Counter(o for o in outcomes if isinstance(o, str))
    return {"requests": total, "clients": clients, "seconds": round(elapsed, 2),
            "per_pid": {str(p): n for p, n in per_pid.most_common()}, "errors": dict(errors)}


def measure_long_lived(port: int, count: int = 50) -> dict[str, Any]:
    """Open ``count`` connections back to back (as ``wrk -c50`` does), then one request on each."""
    clients: list[Client] = []
    pids: list[int | str] = []
    try:
        for _ in range(count):
            clients.append(Client(port))
        for client in clients:
            client.send("/")
        for client in clients:
            try:
                pids.append(client.receive())
            except (OSError, BadResponse) as err:
                pids.append(error_name(err))
    finally:
        for client in clients:
            client.close()
    per_pid = collections.Counter(p for p in pids if isinstance(p, int))
    errors = collections.Counter(p for p in pids if isinstance(p, str))
    return {"connections": count, "per_pid": {str(p): n for p, n in per_pid.most_common()},
            "errors": dict(errors)}


def measure_skew(port: int, total: int = 300, rate: float = 40.0, slow_share: float = 0.1,
                 slow_s: float = 0.2, seed: int = 4) -> dict[str, Any]:
    """Open-loop arrivals (Poisson, ``rate``/s), each on a new connection; ``slow_share`` sleep.

    Latency counts from the planned send time, so a late client thread is
    not mistaken for a fast server.  The same plan (seed) is used for every
    mode.  At 40/s, slow requests keep 0.8 of the 4 one-thread workers busy
    on average, so a dispatcher that avoids busy workers can nearly always
    find an idle one; ``unavoidable`` counts the fast requests that arrive
    while at least 4 slow ones are in progress, when even it cannot.
    """
    rng = random.Random(seed)
    plan = []
    at = 0.0
    for _ in range(total):
        at += rng.expovariate(rate)
        plan.append((at, rng.random() < slow_share))
    slow_starts = [at for at, slow in plan if slow]
    unavoidable = sum(1 for at, slow in plan if not slow
                      and sum(1 for s in slow_starts if at - slow_s < s <= at) >= WORKERS)
    # (slow, latency from the planned start, error, planned start, end, pid), times from ``start``
    results: list[tuple[bool, float, str | None, float, float, int | None]] = []
    start = time.monotonic() + 0.05

    def one(at: float, slow: bool) -> None:
        pid, error, _ = fetch_traced(port, f"/?sleep={slow_s}" if slow else "/")
        end = time.monotonic() - start
        results.append((slow, end - at, error, at, end, pid))

    with ThreadPoolExecutor(64) as pool:
        for at, slow in plan:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, at, slow)
    fast = [r[1] * 1000 for r in results if not r[0] and r[2] is None]
    slow_ms = [r[1] * 1000 for r in results if r[0] and r[2] is None]
    slow_done = [(at, end, pid) for is_slow, _, err, at, end, pid in results if is_slow and err is None]
    # A fast request planned after a slow one, served by the same one-thread
    # worker and finished after it, waited for it: the dispatcher's doing, not
    # the machine's (a stalled CPU delays every request, but sends none there).
    behind = sum(1 for is_slow, _, err, at, end, pid in results if not is_slow and err is None
                 and any(pid == s_pid and s_at <= at < s_end <= end for s_at, s_end, s_pid in slow_done))
    return {
        "requests": total, "rate_per_s": rate, "slow_share": slow_share, "slow_ms": slow_s * 1000,
        "fast": len(fast), "slow": len(slow_ms), "unavoidable": unavoidable,
        "errors": dict(collections.Counter(r[2] for r in results if r[2])),
        "fast_behind_slow_same_worker": behind,
        "fast_p50_ms": round(percentile(fast, 50), 2), "fast_p90_ms": round(percentile(fast, 90), 2),
        "fast_p99_ms": round(percentile(fast, 99), 2), "fast_max_ms": round(max(fast), 2),
        "fast_over_50ms": sum(1 for v in fast if v > 50),
        "slow_p50_ms": round(percentile(slow_ms, 50), 2),
    }


def wrk_rps(port: int, keepalive: bool, duration: float, connections: int = 16) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s"]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://{HOST}:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": float(match.group(1)), "requests": int(total.group(1)) if total else 0,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def python_rps(port: int, keepalive: bool, duration: float, connections: int = 16) -> dict[str, Any]:
    """The fallback load generator: ``connections`` threads in a closed loop."""
    stop_at = time.monotonic() + duration
    done = [0] * connections
    failed = [0] * connections

    def loop(i: int) -> None:
        client: Client | None = None
        while time.monotonic() < stop_at:
            try:
                if keepalive:
                    if client is None:
                        client = Client(port)
                    client.send("/")
                    client.receive()
                else:
                    fetch(port)
                done[i] += 1
            except (OSError, BadResponse):
                failed[i] += 1
                if client is not None:
                    client.close()
                    client = None
        if client is not None:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 2 * IO_TIMEOUT)
    return {"rps": round(sum(done) / (time.monotonic() - started), 2), "requests": sum(done),
            "errors": sum(failed)}


def client_ports_held_by(pid: int, port: int) -> set[int]:
    """The client ports of the connections to ``port`` whose socket ``pid`` holds."""
    held = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    held.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] != "0A" and fields[9] in held:
            ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def fetch_traced(port: int, path: str, timeout: float = IO_TIMEOUT) -> tuple[int | None, str | None, int]:
    """Like ``fetch``, but never raises: (pid or None, error or None, the client's port)."""
    local_port = 0
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            local_port = sock.getsockname()[1]
            sock.sendall(request_bytes(path, close=True))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return pid_of(b"".join(chunks)), None, local_port
    except (OSError, BadResponse) as err:
        return None, error_name(err), local_port


def cpu_and_switches(pids: list[int]) -> tuple[float, int]:
    """CPU seconds (user + system) and context switches so far, summed over ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, switches = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(stat[11]) + int(stat[12])) / ticks  # every thread of the process
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        switches += int(line.split()[1])
    return cpu, switches


def measure_kill_under_load(proc: ServerProcess, clients: int = 16, duration: float = 4.0,
                            kill_at: float = 1.5, sleep_s: float = 0.01) -> dict[str, Any]:
    """Closed-loop load (new connection per request, each ~``sleep_s``); SIGKILL one worker."""
    port = proc.port
    start = time.monotonic()
    stop_at = start + duration
    records: list[tuple[float, float, int | None, str | None, int]] = []

    def loop() -> None:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            pid, error, client_port = fetch_traced(port, f"/?sleep={sleep_s}")
            records.append((t0 - start, time.monotonic() - start, pid, error, client_port))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start + kill_at - time.monotonic()))
    before = set(proc.workers())
    victim = min(before)
    # Stopped, it can accept nothing more: what it holds now is exactly what dies with it.
    os.kill(victim, signal.SIGSTOP)
    try:
        held = client_ports_held_by(victim, port)
    finally:
        os.kill(victim, signal.SIGKILL)
    killed = time.monotonic() - start
    for thread in threads:
        thread.join(duration + 2 * IO_TIMEOUT)
    deadline = time.monotonic() + 10
    while len(set(proc.workers()) - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    newcomers = set(proc.workers()) - before
    failed = [r for r in records if r[3] is not None]
    on_victim = [r for r in failed if r[0] <= killed and r[4] in held]
    around = [end - t0 for t0, end, _, err, _ in records if err is None and t0 <= killed + 1.0 and end >= killed]
    return {
        "clients": clients, "seconds": duration, "killed_at_s": round(killed, 3),
        "victim": victim, "victim_connections_at_kill": len(held),
        "requests": len(records), "failed": len(failed),
        "errors": dict(collections.Counter(r[3] for r in failed)),
        "failed_on_victim_connections": len(on_victim),
        "failed_elsewhere": len(failed) - len(on_victim),
        "served_by_victim": sum(1 for r in records if r[2] == victim),
        "served_by_replacement": sum(1 for r in records if r[2] in newcomers),
        "replacement_started": bool(newcomers),
        "max_latency_ms_around_kill": round(max(around) * 1000, 1) if around else None,
    }


def measure_queued_restart(proc: ServerProcess, count: int = 40, hold_s: float = 0.5) -> dict[str, Any]:
    """SIGSTOP a worker, open ``count`` connections with a request each, SIGKILL it, read all.

    In reuseport mode about a quarter of the connections hash to the stopped
    worker's socket and wait in its queue; the replacement must serve them.
    """
    port = proc.port
    before = set(proc.workers())
    victim = min(before)
    clients: list[Client] = []
    outcomes: list[int | str] = []
    os.kill(victim, signal.SIGSTOP)
    try:
        time.sleep(0.2)
        for _ in range(count):
            client = Client(port, timeout=20)
            client.send("/", close=True)
            clients.append(client)
        time.sleep(hold_s)
        answered_before_kill = 0
        for client in clients:
            client.sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                if client.sock.recv(1, socket.MSG_PEEK):
                    answered_before_kill += 1
            client.sock.settimeout(20)
    finally:
        os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    last_answer = killed
    try:
        for client in clients:
            try:
                outcomes.append(client.receive())
                last_answer = max(last_answer, time.monotonic())
            except (OSError, BadResponse) as err:
                outcomes.append(error_name(err))
    finally:
        for client in clients:
            client.close()
    deadline = time.monotonic() + 10
    while len(set(proc.workers()) - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    newcomers = set(proc.workers()) - before
    served = [o for o in outcomes if isinstance(o, int)]
    return {
        "connections": count, "answered": len(served),
        "answered_before_kill": answered_before_kill,
        "answered_by_replacement": sum(1 for p in served if p in newcomers),
        "answered_by_victim": sum(1 for p in served if p == victim),
        "errors": dict(collections.Counter(o for o in outcomes if isinstance(o, str))),
        "last_answer_after_kill_ms": round((last_answer - killed) * 1000, 1),
    }


# -- running it all ---------------------------------------------------------------------


def rotated(modes: list[str], rep: int) -> list[str]:
    """Each repetition starts with another mode, so drift does not favour one."""
    shift = rep % len(modes)
    return modes[shift:] + modes[:shift]


def ensure_wrk(wanted: str) -> str:
    """'wrk' if it is (or can be made) available and wanted, else 'python'."""
    if wanted == "python":
        return "python"
    if shutil.which("wrk") is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
        print("wrk is missing: installing Debian's wrk with apt-get", file=sys.stderr)
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
            subprocess.run(install, env=env, capture_output=True, timeout=300)
    if shutil.which("wrk") is not None:
        return "wrk"
    if wanted == "wrk":
        sys.exit("wrk is not installed and could not be installed")
    print("wrk is not available: measuring requests per second with Python threads", file=sys.stderr)
    return "python"


def export_rev(rev: str) -> tuple[Path, str]:
    """The server package at ``rev`` (plus bench/apps.py) in a temp dir, and the full hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True,
                            text=True, check=True).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix="clusterserve-bench-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "clusterserve"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "bench").mkdir()
    for name in ("__init__.py", "apps.py"):
        shutil.copy(ROOT / "bench" / name, target / "bench" / name)
    return target, commit


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    return {"head": git("rev-parse", "HEAD"),
            "server_changes_uncommitted": bool(git("status", "--porcelain", "clusterserve"))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    pin = Pinning(not args.no_pin)
    pin.pin_client()
    loadgen = ensure_wrk(args.loadgen)
    modes = list(args.modes)
    source, commit = (export_rev(args.rev) if args.rev else (ROOT, None))
    bench = Bench(pin, source)
    out: dict[str, Any] = {
        "meta": {
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/dispatch.py", *sys.argv[1:]]),
            "server_source": f"git {commit}" if commit else "working tree", **git_state(),
            "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "pinning": pin.describe(), "rps_load_generator": loadgen, "workers": WORKERS,
            "threads": 1, "reps": args.reps,
        },
    }
    begun = time.monotonic()

    def section(name: str, body: Callable[[], Any]) -> None:
        if name not in args.only:
            return
        t0 = time.monotonic()
        print(f"[{time.monotonic() - begun:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        out[name] = body()
        out["meta"].setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)

    def repeated(measure: Callable[[ServerProcess], dict[str, Any]], with_counters: bool = False,
                 app: str = APP, reps: int | None = None) -> dict[str, list[dict[str, Any]]]:
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for rep in range(args.reps if reps is None else reps):
            for mode in rotated(modes, rep):
                with bench.server(mode, app=app) as proc:
                    load = os.getloadavg()[0]
                    result = measure(proc)
                    log_text = stop(proc)
                result["loadavg_before"] = load
                if with_counters:
                    result["exit_counters"] = {str(k): v for k, v in exit_counters(log_text).items()}
                runs[mode].append(result)
        return runs

    try:
        section("spread", lambda: repeated(lambda p: measure_spread(p.port), with_counters=True))
        section("long_lived", lambda: repeated(lambda p: measure_long_lived(p.port)))
        section("long_lived_asgi", lambda: repeated(lambda p: measure_long_lived(p.port), app=ASGI_APP))
        section("skew", lambda: repeated(lambda p: measure_skew(p.port)))
        section("overhead", lambda: overhead(bench, modes, args, loadgen))
        section("young_kill", lambda: repeated(measure_young_kill, reps=min(args.reps, 3)))
        if "loss" in args.only:
            print(f"[{time.monotonic() - begun:6.1f}s] loss ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            out["kill_under_load"], out["queued_restart"] = loss(bench, modes, min(args.reps, 3))
            out["meta"].setdefault("section_seconds", {})["loss"] = round(time.monotonic() - t0, 1)
    finally:
        if args.rev:
            shutil.rmtree(source, ignore_errors=True)
    out["meta"]["total_seconds"] = round(time.monotonic() - begun, 1)
    return out


def measure_young_kill(proc: ServerProcess, total: int = 40, clients: int = 8) -> dict[str, Any]:
    """SIGKILL a worker that has just started, then ``total`` requests at once, each on a new connection.

    The replacement of a worker that dies within 5 s of its start comes
    after a back-off; meanwhile, in reuseport mode, nobody accepts on its slot.
    """
    victim = min(proc.workers())
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()

    def one(_: int) -> float | str:
        t0 = time.monotonic()
        _, error, _ = fetch_traced(proc.port, "/")
        return error if error else time.monotonic() - t0

    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(total)))
    latencies = [o for o in outcomes if isinstance(o, float)]
    return {
        "requests": total, "clients": clients, "seconds": round(time.monotonic() - started, 2),
        "slowest_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "over_250ms": sum(1 for v in latencies if v > 0.25),
        "errors": dict(collections.Counter(o for o in outcomes if isinstance(o, str))),
    }


# A worker that dies sooner than this after its start is replaced only after a
# back-off (clusterserve.arbiter.HEALTHY_UPTIME is 5 s); the loss tests wait it out.
SETTLE_S = 5.5


def loss(bench: Bench, modes: list[str], reps: int
         ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Both loss tests, on one server per mode and repetition whose workers count as healthy.

    The second test's victim is again the oldest worker, not the first one's young replacement.
    """
    kills: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    queued: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(reps):
        for mode in rotated(modes, rep):
            with bench.server(mode) as proc:
                time.sleep(SETTLE_S)
                kills[mode].append(measure_kill_under_load(proc))
                proc.wait_ready(WORKERS + 1)
                queued[mode].append(measure_queued_restart(proc))
    return kills, queued


def overhead(bench: Bench, modes: list[str], args: argparse.Namespace, loadgen: str) -> dict[str, Any]:
    """Hello-world requests per second, keep-alive and new connection per request.

    One server per mode, all running; the modes take turns, so each
    repetition compares them under the same machine noise.
    """
    measure = wrk_rps if loadgen == "wrk" else python_rps
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        variant: {m: [] for m in modes} for variant in ("keepalive", "new_connection")}
    with contextlib.ExitStack() as stack:
        servers = {mode: stack.enter_context(bench.server(mode)) for mode in modes}
        for mode in modes:  # warm up: first connections, page faults, caches
            for keepalive in (True, False):
                measure(servers[mode].port, keepalive, 1.0)
        for rep in range(args.reps):
            for mode in rotated(modes, rep):
                for variant in runs:
                    proc = servers[mode]
                    pids = [proc.pid, *proc.workers()]
                    cpu0, switches0 = cpu_and_switches(pids)
                    arbiter0, _ = cpu_and_switches([proc.pid])
                    load = os.getloadavg()[0]
                    began = time.monotonic()
                    result = measure(proc.port, variant == "keepalive", args.duration)
                    elapsed = time.monotonic() - began
                    cpu1, switches1 = cpu_and_switches(pids)
                    arbiter1, _ = cpu_and_switches([proc.pid])
                    served = max(1, result["requests"])
                    result.update(rep=rep, server_cpu_us_per_request=round((cpu1 - cpu0) / served * 1e6, 1),
                                  arbiter_cpu_us_per_request=round((arbiter1 - arbiter0) / served * 1e6, 1),
                                  switches_per_request=round((switches1 - switches0) / served, 2),
                                  server_cpu_share=round((cpu1 - cpu0) / elapsed, 2), loadavg_before=load)
                    runs[variant][mode].append(result)
        logs = {mode: stop(proc) for mode, proc in servers.items()}
    out: dict[str, Any] = {"seconds_each": args.duration, "connections": 16, "runs": runs,
                           "exit_counters": {m: {str(k): v for k, v in exit_counters(t).items()}
                                             for m, t in logs.items()}}
    return out


# -- the report --------------------------------------------------------------------------


def counts(result: dict[str, Any]) -> list[int]:
    return list(result["per_pid"].values())


def off_mean(values: list[int], total: int, workers: int = WORKERS) -> float:
    padded = values + [0] * (workers - len(values))
    mean = total / workers
    return max(abs(v - mean) for v in padded) / mean * 100


def slash(values: list[int], workers: int = WORKERS) -> str:
    return "/".join(str(v) for v in sorted(values + [0] * (workers - len(values)), reverse=True))


def spread_of(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def ratios(runs: dict[str, list[dict[str, Any]]], mode: str) -> list[float]:
    by_rep = {r["rep"]: r["rps"] for r in runs["shared"]}
    return [r["rps"] / by_rep[r["rep"]] for r in runs[mode] if by_rep.get(r["rep"])]


def cpu_ratios(runs: dict[str, list[dict[str, Any]]], mode: str) -> list[float]:
    """Shared's CPU per request over this mode's, per repetition: throughput per CPU, relative."""
    by_rep = {r["rep"]: r["server_cpu_us_per_request"] for r in runs["shared"]}
    return [by_rep[r["rep"]] / r["server_cpu_us_per_request"] for r in runs[mode]
            if r["server_cpu_us_per_request"] and r["rep"] in by_rep]


def markdown(out: dict[str, Any]) -> str:
    present = [out[key] for key in ("spread", "long_lived", "skew", "young_kill", "kill_under_load") if key in out]
    modes = [m for m in MODES if any(m in section for section in present)]
    rows: list[tuple[str, list[str]]] = []

    def errs(results: list[dict[str, Any]]) -> str:
        n = sum(r["errors"] if isinstance(r["errors"], int) else sum(r["errors"].values())
                for r in results)
        return f"; {n} errors" if n else ""

    def med(results: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in results)

    if "spread" in out:
        spread = out["spread"]
        rows.append(("Spread: 2,000 requests on new connections from 16 clients; worst worker's share "
                     "off the mean, each run",
                     [" ".join(f"{off_mean(counts(r), r['requests']):.0f}" for r in spread[m]) + " %"
                      + errs(spread[m]) for m in modes]))
    for key, worker in (("long_lived", "WSGI"), ("long_lived_asgi", "ASGI")):
        if key not in out:
            continue
        rows.append((f"Long-lived, {worker} worker: 50 keep-alive connections opened at once; "
                     "connections per worker, each run",
                     ["<br>".join(slash(counts(r)) for r in out[key][m]) + errs(out[key][m]) for m in modes]))
    if "skew" in out:
        skew = out["skew"]
        first = skew[modes[0]][0]
        rows.append((f"Skew ({first['requests']} requests at {first['rate_per_s']:.0f}/s, 10 % sleep 200 ms, "
                     "threads=1): fast requests p50 / p99 ms, median of runs",
                     [f"{med(skew[m], 'fast_p50_ms'):.1f} / {med(skew[m], 'fast_p99_ms'):.0f}" + errs(skew[m])
                      for m in modes]))
        rows.append((f"… fast requests slower than 50 ms, each run, of {first['fast']} "
                     f"(unavoidable, arriving while 4 slow ones run: {first['unavoidable']})",
                     [" ".join(str(r["fast_over_50ms"]) for r in skew[m]) for m in modes]))
        if "fast_behind_slow_same_worker" in first:
            rows.append(("… fast requests that waited for a slow one on the same worker, each run",
                         [" ".join(str(r["fast_behind_slow_same_worker"]) for r in skew[m]) for m in modes]))
    if "overhead" in out:
        runs = out["overhead"]["runs"]
        shares = [r["server_cpu_share"] for variant in runs.values()
                  for results in variant.values() for r in results]
        for variant, label in (("keepalive", "keep-alive"), ("new_connection", "a new connection per request")):
            rows.append((f"Hello world, {label} (wrk -t1 -c16): server CPU µs per request, median (min–max) "
                         "[arbiter's part]",
                         [spread_of([r["server_cpu_us_per_request"] for r in runs[variant][m]])
                          + f" [{med(runs[variant][m], 'arbiter_cpu_us_per_request'):.0f}]" for m in modes]))
            rows.append(("… requests per CPU-second relative to shared, same repetition, median (min–max)",
                         [f"×{statistics.median(cpu_ratios(runs[variant], m)):.2f} "
                          f"({min(cpu_ratios(runs[variant], m)):.2f}–{max(cpu_ratios(runs[variant], m)):.2f})"
                          for m in modes]))
            rows.append((f"… req/s as measured, median (min–max); ratio to shared, median "
                         f"(the server got {min(shares):.0%}–{max(shares):.0%} of its CPU: noisy)",
                         [spread_of([r["rps"] for r in runs[variant][m]])
                          + f"; ×{statistics.median(ratios(runs[variant], m)):.2f}" + errs(runs[variant][m])
                          for m in modes]))
    if "kill_under_load" in out:
        kill = out["kill_under_load"]
        rows.append(("SIGKILL one worker under load (16 clients, new connection each), each run: failed / "
                     "requests; failed on the victim's connections / connections it held",
                     ["<br>".join(f"{r['failed']} / {r['requests']}; {r['failed_on_victim_connections']} / "
                                  f"{r['victim_connections_at_kill']}" for r in kill[m]) for m in modes]))
        rows.append(("… slowest successful request around the kill, ms, each run",
                     [" ".join(f"{r['max_latency_ms_around_kill']:.0f}" for r in kill[m]) for m in modes]))
    if "queued_restart" in out:
        queued = out["queued_restart"]
        rows.append(("Worker SIGSTOPped, 40 new connections, worker SIGKILLed, each run: answered / 40 "
                     "(by its replacement; last answer, ms after the kill)",
                     ["<br>".join(f"{r['answered']} / {r['connections']} ({r['answered_by_replacement']}; "
                                  f"{r['last_answer_after_kill_ms']:.0f} ms)" for r in queued[m]) for m in modes]))
    if "young_kill" in out:
        young = out["young_kill"]
        rows.append(("Worker SIGKILLed within 5 s of its start (replaced after a back-off), then 40 requests "
                     "from 8 clients, each run: slowest, ms (requests over 250 ms)",
                     ["<br>".join(f"{r['slowest_ms']:.0f} ({r['over_250ms']})" + errs([r]) for r in young[m])
                      for m in modes]))
    lines = ["| measurement | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each measurement (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each req/s run (default 3)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="req/s load generator: wrk (installed if missing), python, or auto")
    parser.add_argument("--rev", help="benchmark the server at this git revision instead of the working tree")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these measurements (the Markdown table needs them all)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin load generator and server to CPUs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="print the table of an earlier run's JSON file and exit")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    if "shared" not in args.modes:
        parser.error("--modes must include shared (the ratios are to shared)")
    out = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"dispatch-{stamp}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")  # before the report, in case it fails
    table = markdown(out)
    out["markdown"] = table
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(table)
    print(f"\n{out['meta']['command']}: {out['meta']['total_seconds']} s; "
          f"{out['meta']['pinning']}; server from {out['meta']['server_source']}; results in {path}")


if __name__ == "__main__":
    main()
