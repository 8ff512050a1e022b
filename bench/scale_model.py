#!/usr/bin/env python3
"""How the dispatch modes scale past this machine: one measurement, a model, a simulation.

Run from the repository root with the project's venv:

    .venv/bin/python bench/scale_model.py             # measure, model, simulate (about 1 minute)
    .venv/bin/python bench/scale_model.py --no-measure --arbiter-us 60 --arbiter-ka-us 15

**Measured** (``measure``): the round-robin arbiter's CPU per passed
connection and per keep-alive request, for the WSGI and the ASGI worker.
A real ``python -m clusterserve bench.apps:app -w 2 --dispatch round-robin``
on 127.0.0.1 gets a fixed number of connections (each one request with
``Connection: close``) from a few client threads; the arbiter's CPU comes
from ``/proc/PID/schedstat`` (nanoseconds on CPU) read before and after, less
what it spends idle over the same wall time.  CPU time, not a rate, so a
busy machine slows the run but hardly moves the number.

**Modelled** (``model``): everything at 16, 64 and 128 workers, which this
2-core machine cannot run meaningfully: the connection rate at which the
arbiter's one core saturates, the queueing of per-socket (``reuseport``)
against one shared queue, balls-into-bins spread of long-lived connections,
and memory from per-worker USS.

**Simulated** (``simulate``): seeded, bounded in arrivals.  Poisson arrivals
over N single-threaded workers, served FIFO, in three placements:
``reuseport`` (a uniform hash picks the worker's own queue), one queue whose
idle workers take turns (``shared`` with the WSGI worker's pause while busy,
and ``round-robin``), and one queue where the kernel's wake-up order favours
the same worker (``shared`` with a worker that never stops watching the
socket, as the ASGI worker).  One worker can be made slow.

Every number the model uses is printed with where it came from; one JSON
file goes to bench/results/scale-YYYYMMDD-HHMMSS.json.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import heapq
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCALES = (16, 64, 128)
HOST = "127.0.0.1"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
KEEPALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

# Idle memory from docs/benchmarks.md (bench/results/peers-20261126-014029.json, 2 workers,
# hello world, /proc/PID/smaps_rollup): USS per worker, USS of the arbiter, and the pages
# every process shares (PSS total - USS total), in MiB.
MEMORY_MIB = {
    "clusterserve WSGI": {"worker_uss": 7.1, "arbiter_uss": 8.3, "shared": 40.3 - 22.5},
    "clusterserve ASGI": {"worker_uss": 11.3, "arbiter_uss": 10.9, "shared": 51.0 - 33.4},
    "gunicorn sync": {"worker_uss": 3.7, "arbiter_uss": 7.9, "shared": 31.4 - 15.2},
}
# Worker CPU per hello-world connection (Connection: close) with round-robin, same run, µs.
WORKER_US_PER_CONNECTION = {"wsgi": 225.0, "asgi": 96.0}


# -- measured: the arbiter's CPU per passed connection ------------------------------------


def cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid``'s main thread has run (the arbiter has no other thread)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def close_connections(port: int, count: int, clients: int, deadline: float) -> int:
    """``count`` connections, one request each, from ``clients`` threads; the answered ones."""
    answered = [0] * clients
    share = [count // clients + (i < count % clients) for i in range(clients)]

    def one_client(i: int) -> None:
        for _ in range(share[i]):
            if time.monotonic() > deadline:
                return
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(CLOSE_REQUEST)
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                answered[i] += 1

    run_threads(one_client, clients)
    return sum(answered)


def keepalive_requests(port: int, count: int, clients: int, deadline: float) -> int:
    """``count`` requests over ``clients`` keep-alive connections; the answered ones."""
    answered = [0] * clients
    share = [count // clients + (i < count % clients) for i in range(clients)]

    def one_client(i: int) -> None:
        with socket.create_connection((HOST, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            for _ in range(share[i]):
                if time.monotonic() > deadline:
                    return
                sock.sendall(KEEPALIVE_REQUEST)
                length = 0
                status = reader.readline()
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                reader.read(length)
                if status.startswith(b"HTTP/1.1 200"):
                    answered[i] += 1

    run_threads(one_client, clients)
    return sum(answered)


def wrk_requests(port: int, keepalive: bool, connections: int, seconds: float) -> int:
    """Requests ``wrk -t1`` got answered in ``seconds``; non-2xx and socket errors are refused."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://{HOST}:{port}/"]
    if not keepalive:
        command[1:1] = ["-H", "Connection: close"]
    text = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk saw errors:\n{text}")
    return int(re.search(r"(\d+) requests in", text).group(1))


def run_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextlib.contextmanager
def round_robin_server(app: str) -> Iterator[Any]:
    from tests.harness import ServerProcess

    proc = ServerProcess([app, "-w", "2", "--dispatch", "round-robin"])
    try:
        proc.start(wait_ready=2)
        yield proc
    finally:
        proc.stop()


def arbiter_cost(proc: Any, load: Any, count: int, clients: int, idle_ns_per_s: float,
                 limit_s: float) -> dict[str, Any]:
    """The arbiter's CPU per answered request of one load run, idle time taken out."""
    before = cpu_ns(proc.pid)
    began = time.monotonic()
    answered = load(proc.port, count, clients, began + limit_s)
    elapsed = time.monotonic() - began
    spent_ns = cpu_ns(proc.pid) - before - idle_ns_per_s * elapsed
    return {"answered": answered, "seconds": round(elapsed, 3), "per_second": round(answered / elapsed),
            "arbiter_us_each": round(spent_ns / max(1, answered) / 1000, 1),
            "loadavg": round(os.getloadavg()[0], 1)}


def measure(connections: int, requests: int, clients: int, reps: int, limit_s: float,
            wrk_seconds: float) -> dict[str, Any]:
    """Round-robin arbiter CPU per new connection and per keep-alive request, WSGI and ASGI.

    The Python clients give a fixed count at a modest rate; ``wrk`` (when installed and
    ``wrk_seconds`` > 0) the highest rate this machine reaches.  The arbiter's cost per
    connection falls as the rate rises (one loop turn serves several), so the ``wrk``
    figure is the one nearer saturation.
    """
    use_wrk = wrk_seconds > 0 and shutil.which("wrk") is not None
    out: dict[str, Any] = {}
    for interface, app in (("wsgi", "bench.apps:app"), ("asgi", "bench.apps:asgi_app")):
        with round_robin_server(app) as proc:
            close_connections(proc.port, 200, clients, time.monotonic() + limit_s)  # warm up
            idle_before = cpu_ns(proc.pid)
            time.sleep(1.0)
            idle_ns_per_s = (cpu_ns(proc.pid) - idle_before) / 1.0
            runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
            for _ in range(reps):
                runs["new_connection"].append(
                    arbiter_cost(proc, close_connections, connections, clients, idle_ns_per_s, limit_s))
                runs["keepalive"].append(
                    arbiter_cost(proc, keepalive_requests, requests, clients, idle_ns_per_s, limit_s))
                if use_wrk:
                    for keepalive in (False, True):
                        runs[f"{'keepalive' if keepalive else 'new_connection'}_wrk"].append(arbiter_cost(
                            proc, lambda port, *_, ka=keepalive: wrk_requests(port, ka, 64, wrk_seconds),
                            0, 0, idle_ns_per_s, limit_s))
        out[interface] = {"idle_arbiter_us_per_s": round(idle_ns_per_s / 1000, 1), "runs": runs,
                          **{f"{variant}_median_us": statistics.median(r["arbiter_us_each"] for r in rs)
                             for variant, rs in runs.items() if rs}}
    return out


def wake_order(processes: int, connections: int, re_register: bool) -> list[int]:
    """Which of ``processes`` idle processes the kernel wakes for each of ``connections``.

    Each process makes its own epoll after the fork and adds the one listening socket
    with ``EPOLLEXCLUSIVE``, in turn (process 0 first), as ``shared`` workers do.  The
    connections come one at a time, each after every process is back in ``epoll_wait``.
    With ``re_register`` a process removes the socket and adds it again after each
    accept, as a WSGI worker with one thread does around a request.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(64)
    listener.setblocking(False)
    listener_port = listener.getsockname()[1]
    report_r, report_w = os.pipe()
    stop_r, stop_w = os.pipe()
    children = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(report_r)
            os.close(stop_w)
            code = 1
            try:
                serve_wakes(listener, index, report_w, stop_r, re_register)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
        time.sleep(0.02)  # so that the children add the socket in index order
    os.close(report_w)
    os.close(stop_r)
    listener.close()
    order: list[int] = []
    try:
        time.sleep(0.1)
        for _ in range(connections):
            with socket.create_connection((HOST, listener_port), timeout=5):
                ready, _, _ = select.select([report_r], [], [], 5.0)
                if not ready:
                    break
                order.append(os.read(report_r, 1)[0])
            time.sleep(0.01)
    finally:
        os.close(stop_w)
        for pid in children:
            deadline = time.monotonic() + 5
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
        os.close(report_r)
    return order


def serve_wakes(listener: socket.socket, index: int, report_w: int, stop_r: int, re_register: bool) -> None:
    poller = select.epoll()
    poller.register(stop_r, select.EPOLLIN)
    poller.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            if fd == stop_r:
                return
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            os.write(report_w, bytes([index]))
            conn.close()
            if re_register:
                poller.unregister(listener.fileno())
                poller.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)


VARIANTS = ("new_connection", "keepalive", "new_connection_wrk", "keepalive_wrk")


# -- modelled: closed forms ------------------------------------------------------------------


def saturation_rate(arbiter_us: float, utilisation: float = 1.0) -> float:
    """Connections per second at which the arbiter's one core is ``utilisation`` busy."""
    return utilisation * 1e6 / arbiter_us


def cores_fed(worker_us: float, arbiter_us: float) -> float:
    """Worker cores one arbiter core keeps busy: beyond it, the arbiter is the bottleneck."""
    return worker_us / arbiter_us


def erlang_c(servers: int, load: float) -> float:
    """P(an arrival waits) in M/M/c with ``load`` = λ/μ erlangs (< servers)."""
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= load / k
        total += term
    last = term * load / servers / (1 - load / servers)
    return last / (total + last)


def mm_waits(servers: int, utilisation: float, service: float = 1.0) -> dict[str, float]:
    """One shared queue (M/M/c) against one queue per server (c × M/M/1), same utilisation.

    Returns P(wait) and the mean wait in units of ``service`` for each.
    """
    pooled = erlang_c(servers, utilisation * servers)
    return {"pooled_p_wait": pooled,
            "pooled_mean_wait": pooled * service / (servers * (1 - utilisation)),
            "split_p_wait": utilisation,
            "split_mean_wait": utilisation * service / (1 - utilisation)}


def expected_max_load(balls: int, bins: int, trials: int, seed: int) -> float:
    """Mean over ``trials`` of the fullest bin when ``balls`` go to uniform random ``bins``."""
    rng = random.Random(seed)
    total = 0
    for _ in range(trials):
        counts = [0] * bins
        for _ in range(balls):
            counts[rng.randrange(bins)] += 1
        total += max(counts)
    return total / trials


def memory_mib(server: str, workers: int) -> float:
    """Total memory (PSS) with ``workers`` idle workers, assuming per-worker USS does not grow."""
    m = MEMORY_MIB[server]
    return m["shared"] + m["arbiter_uss"] + workers * m["worker_uss"]


# -- simulated: Poisson arrivals over N single-threaded workers --------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests of two lengths, in milliseconds; ``slow_share`` of them are slow."""

    fast_ms: float = 2.0
    slow_ms: float = 50.0
    slow_share: float = 0.05

    @property
    def mean_ms(self) -> float:
        return self.fast_ms * (1 - self.slow_share) + self.slow_ms * self.slow_share

    def draw(self, rng: random.Random) -> float:
        return self.slow_ms if rng.random() < self.slow_share else self.fast_ms


@dataclass
class SimResult:
    placement: str
    workers: int
    utilisation: float
    slow_worker_speed: float
    arrivals: int
    waited_share: float
    mean_wait_ms: float
    p99_wait_ms: float
    max_wait_ms: float
    busiest_share: float  # of all connections, on the worker that got the most
    slow_worker_share: float
    slow_worker_p99_wait_ms: float
    slow_worker_max_queue: int
    simulated_s: float
    busiest_offered_load: float
    idlest_offered_load: float
    mean_wake_position: float = 0.0  # wait-queue entries the kernel visits per wake (priority only)
    per_worker: list[int] = field(default_factory=list)


PLACEMENTS = ("reuseport", "one_queue_turns", "one_queue_priority")


def simulate(placement: str, workers: int, utilisation: float, arrivals: int, seed: int,
             workload: Workload = Workload(), slow_worker_speed: float = 1.0) -> SimResult:
    """Serve ``arrivals`` Poisson arrivals FIFO on ``workers`` single-threaded workers.

    Worker 0 runs at ``slow_worker_speed`` (1.0: like the rest).  Placements:

    - ``reuseport``: a uniform hash picks the worker; each worker has its own queue.
    - ``one_queue_turns``: one queue; among idle workers the one idle longest takes the
      connection (``shared`` with the pause while busy: a worker re-registers at the tail
      of the socket's wait queue; ``round-robin`` with its turns among ties).
    - ``one_queue_priority``: one queue; the idle worker that registered first takes it
      (``shared`` when workers never stop watching the socket); when none is idle, the
      first to finish accepts everything queued until then.
    """
    rng = random.Random(seed)
    speed = [slow_worker_speed] + [1.0] * (workers - 1)
    rate_per_ms = utilisation * sum(speed) / workload.mean_ms
    free_at = [0.0] * workers
    served = [0] * workers
    busy_ms = [0.0] * workers
    waits: list[float] = []
    slow_waits: list[float] = []
    slow_starts: list[float] = []  # start times of worker 0's queued connections, to count its queue
    slow_queue_max = 0
    wake_positions = 0
    wakes = 0
    idle_heap = [(0.0, w) for w in range(workers)]  # (free since, worker), for one_queue_turns
    batch_owner, batch_until = -1, -math.inf  # one_queue_priority: who takes what queues now
    now = 0.0
    for _ in range(arrivals):
        now += rng.expovariate(rate_per_ms)
        service = workload.draw(rng)
        if placement == "reuseport":
            worker = rng.randrange(workers)
            start = max(now, free_at[worker])
        elif placement == "one_queue_turns":
            since, worker = heapq.heappop(idle_heap)
            start = max(now, since)
        elif placement == "one_queue_priority":
            idle = next((w for w in range(workers) if free_at[w] <= now), None)
            if idle is not None:
                worker, start = idle, now
                wake_positions += idle + 1
                wakes += 1
            else:
                if now >= batch_until:
                    batch_owner = min(range(workers), key=free_at.__getitem__)
                    batch_until = free_at[batch_owner]
                worker = batch_owner
                start = free_at[worker]
        else:
            raise ValueError(placement)
        free_at[worker] = start + service / speed[worker]
        if placement == "one_queue_turns":
            heapq.heappush(idle_heap, (free_at[worker], worker))
        served[worker] += 1
        busy_ms[worker] += service / speed[worker]
        wait = start - now
        waits.append(wait)
        if worker == 0:
            slow_waits.append(wait)
            del slow_starts[:bisect.bisect_right(slow_starts, now)]
            slow_queue_max = max(slow_queue_max, len(slow_starts))
            if start > now:
                slow_starts.append(start)
    waits.sort()
    slow_waits.sort()
    return SimResult(
        placement=placement, workers=workers, utilisation=utilisation,
        slow_worker_speed=slow_worker_speed, arrivals=arrivals,
        waited_share=sum(w > 1e-9 for w in waits) / arrivals,
        mean_wait_ms=statistics.fmean(waits), p99_wait_ms=quantile(waits, 0.99),
        max_wait_ms=waits[-1], busiest_share=max(served) / arrivals,
        slow_worker_share=served[0] / arrivals,
        slow_worker_p99_wait_ms=quantile(slow_waits, 0.99) if slow_waits else 0.0,
        slow_worker_max_queue=slow_queue_max, simulated_s=now / 1000,
        busiest_offered_load=max(busy_ms) / now, idlest_offered_load=min(busy_ms) / now,
        mean_wake_position=wake_positions / wakes if wakes else 0.0, per_worker=served)


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def simulations(arrivals: int, seed: int) -> list[SimResult]:
    """The grid docs/dispatch.md reports: every placement at 16/64/128 workers."""
    results = []
    for workers in SCALES:
        for utilisation, slow in ((0.5, 1.0), (0.8, 1.0), (0.5, 0.25)):
            for placement in PLACEMENTS:
                results.append(simulate(placement, workers, utilisation, arrivals, seed,
                                        slow_worker_speed=slow))
    return results


# -- the report --------------------------------------------------------------------------------


def markdown(out: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    arb = out["arbiter_us"]
    add(f"Arbiter CPU, µs ({arb['source']}):")
    add("")
    if "measured" in out:
        add("")
        add("| worker | load | new connection: µs (at conn/s) | keep-alive request: µs (at req/s) |")
        add("|---|---|---:|---:|")
        for interface, m in out["measured"].items():
            rates = out["arbiter_us"][interface]["rates"]
            for suffix, load in (("", "Python clients, fixed count"), ("_wrk", "wrk -t1 -c64, fixed time")):
                if f"new_connection{suffix}" in rates:
                    add(f"| {interface.upper()} | {load} "
                        f"| {m[f'new_connection{suffix}_median_us']:.0f} ({rates[f'new_connection{suffix}']:,.0f}) "
                        f"| {m[f'keepalive{suffix}_median_us']:.1f} ({rates[f'keepalive{suffix}']:,.0f}) |")
    add("")
    add("| worker | per new connection | per keep-alive request | saturates at (100 % / 70 % of a core) "
        "| hello-world worker cores it feeds |")
    add("|---|---:|---:|---:|---:|")
    for interface in ("wsgi", "asgi"):
        conn, ka = arb[interface]["new_connection"], arb[interface]["keepalive"]
        add(f"| {interface.upper()} | {conn:.0f} | {ka:.1f} | {saturation_rate(conn):,.0f} / "
            f"{saturation_rate(conn, 0.7):,.0f} conn/s | "
            f"{cores_fed(WORKER_US_PER_CONNECTION[interface], conn):.1f} |")
    add("")
    wake = out["wake_order"]
    add(f"Measured: which of {wake['processes']} idle processes (each its own epoll, the listener added "
        f"with EPOLLEXCLUSIVE in index order) the kernel woke for {wake['connections']} connections:")
    add("")
    for key in ("watching", "re_registering"):
        counts = [wake[key].count(i) for i in range(wake["processes"])]
        add(f"- {key.replace('_', '-')}: first 16 {wake[key][:16]}; per process {counts}")
    add("")
    add("Model: one queue (M/M/c) against a queue per worker (c × M/M/1), exponential service:")
    add("")
    add("| workers | utilisation | one queue: P(wait), mean wait | per-worker queues: P(wait), mean wait |")
    add("|---:|---:|---|---|")
    for workers in SCALES:
        for rho in (0.5, 0.8, 0.9):
            w = mm_waits(workers, rho)
            add(f"| {workers} | {rho:.0%} | {w['pooled_p_wait']:.2%}, {w['pooled_mean_wait']:.3f} S | "
                f"{w['split_p_wait']:.0%}, {w['split_mean_wait']:.2f} S |")
    add("")
    add("Model: long-lived connections hashed over workers (balls into bins, fullest worker / mean):")
    add("")
    add("| workers | 1 per worker | 10 per worker | 100 per worker |")
    add("|---:|---:|---:|---:|")
    for workers in SCALES:
        row = out["balls_into_bins"][str(workers)]
        add(f"| {workers} | " + " | ".join(f"{row[str(k)]:.2f}×" for k in (1, 10, 100)) + " |")
    add("")
    add("Model: idle memory (PSS total, MiB), per-worker USS held constant:")
    add("")
    add("| server | " + " | ".join(f"{n} workers" for n in SCALES) + " |")
    add("|---|" + "---:|" * len(SCALES))
    for server in MEMORY_MIB:
        add(f"| {server} | " + " | ".join(f"{memory_mib(server, n):,.0f}" for n in SCALES) + " |")
    add("")
    wl = Workload()
    add(f"Simulation: {out['simulation_arrivals']:,} Poisson arrivals, seed {out['seed']}, "
        f"requests {wl.fast_ms:g} ms ({1 - wl.slow_share:.0%}) or {wl.slow_ms:g} ms, one thread per worker; "
        "waits in ms; 'slow' = worker 0 at a quarter speed; simulated seconds per row in the JSON:")
    add("")
    add("| workers | load | placement | waited | mean / p99 / max wait | busiest worker's share (fair: 1/N) "
        "| worker 0: share, p99 wait, longest queue "
        "| offered load busiest / idlest (over 100 %: its queue grows) | wake position |")
    add("|---:|---|---|---:|---|---:|---|---|---:|")
    for r in out["simulation"]:
        slow = r["slow_worker_speed"] < 1.0
        add(f"| {r['workers']} | {r['utilisation']:.0%}{' slow' if slow else ''} | {r['placement']} "
            f"| {r['waited_share']:.1%} | {r['mean_wait_ms']:.2f} / {r['p99_wait_ms']:.1f} / {r['max_wait_ms']:.0f} "
            f"| {r['busiest_share']:.2%} ({1 / r['workers']:.2%}) "
            f"| {r['slow_worker_share']:.2%}, {r['slow_worker_p99_wait_ms']:.0f}, {r['slow_worker_max_queue']} "
            f"| {r['busiest_offered_load']:.0%} / {r['idlest_offered_load']:.0%} "
            f"| {r['mean_wake_position']:.1f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "loadavg_before": os.getloadavg()[0], "seed": args.seed}
    if args.no_measure:
        arb = {"source": "given on the command line"}
        for interface in ("wsgi", "asgi"):
            arb[interface] = {"new_connection": args.arbiter_us[interface],
                              "keepalive": args.arbiter_ka_us[interface]}
    else:
        measured = measure(args.connections, args.requests, args.clients, args.reps, args.limit,
                           args.wrk_seconds)
        out["measured"] = measured
        arb = {"source": f"measured here, median of {args.reps} runs; the highest-rate load of each kind"}
        for interface, m in measured.items():
            arb[interface] = {variant: m.get(f"{variant}_wrk_median_us", m[f"{variant}_median_us"])
                              for variant in ("new_connection", "keepalive")}
            arb[interface]["rates"] = {variant: statistics.median(r["per_second"] for r in runs)
                                       for variant, runs in m["runs"].items() if runs}
    out["arbiter_us"] = arb
    out["wake_order"] = {"processes": 8, "connections": 40,
                         "watching": wake_order(8, 40, re_register=False),
                         "re_registering": wake_order(8, 40, re_register=True)}
    out["balls_into_bins"] = {str(n): {str(k): expected_max_load(k * n, n, args.bins_trials, args.seed) / k
                                       for k in (1, 10, 100)} for n in SCALES}
    began = time.monotonic()
    out["simulation_arrivals"] = args.arrivals
    out["simulation"] = [asdict(result) for result in simulations(args.arrivals, args.seed)]
    out["simulation_seconds"] = round(time.monotonic() - began, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-measure", action="store_true", help="skip the measurement; use the given µs")
    parser.add_argument("--arbiter-us", type=interface_pair, default={"wsgi": 60.0, "asgi": 26.0},
                        help="WSGI,ASGI arbiter µs per new connection with --no-measure (default 60,26)")
    parser.add_argument("--arbiter-ka-us", type=interface_pair, default={"wsgi": 15.0, "asgi": 0.0},
                        help="WSGI,ASGI arbiter µs per keep-alive request with --no-measure (default 15,0)")
    parser.add_argument("--connections", type=int, default=3000, help="connections per measurement run")
    parser.add_argument("--requests", type=int, default=3000, help="keep-alive requests per measurement run")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=float, default=2.0,
                        help="seconds per wrk run when wrk is installed (0: Python clients only)")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds at most per measurement run")
    parser.add_argument("--arrivals", type=int, default=60_000, help="arrivals per simulation run")
    parser.add_argument("--bins-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    out = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(markdown(out))
    print(f"\nraw numbers: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def interface_pair(text: str) -> dict[str, float]:
    wsgi, asgi = (float(x) for x in text.split(","))
    return {"wsgi": wsgi, "asgi": asgi}


if __name__ == "__main__":
    main()
