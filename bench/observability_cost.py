#!/usr/bin/env python3
"""What observing costs: hello-world requests per second with nothing on, the access log
(text, JSON), Prometheus metrics and statsd.

Run from the repository root, with the project's venv, on a quiet machine:

    .venv/bin/python bench/observability_cost.py            # 5 rounds of 3 s per variant
    .venv/bin/python bench/observability_cost.py --reps 3 --duration 2

Ten servers (WSGI and ASGI, each with nothing on, the access log in
gunicorn's default format, the access log as JSON lines, ``--metrics-bind``,
and ``--statsd-host`` pointed at a UDP socket this script holds; one worker
each, logs written to files in a temporary directory) run side by side on
127.0.0.1 and take
turns, in a rotating order, under ``wrk -t1 -c16`` with keep-alive (or a
bounded Python keep-alive client when ``wrk`` is not installed).  Besides
requests per second it reads the worker's CPU time from ``/proc``: CPU
microseconds per request are steadier than req/s on a shared machine.
Medians over the rounds are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch import cpu_and_switches, python_rps, wrk_rps  # noqa: E402 - after sys.path gets the checkout
from tests.harness import ServerProcess, running  # noqa: E402 - after sys.path gets the checkout

APPS = {"wsgi": "bench.apps:app", "asgi": "bench.apps:asgi_app"}
VARIANTS = {
    "off": [],
    "access log": ["--access-logfile", "{dir}/{name}.log"],
    "access log JSON": ["--access-logfile", "{dir}/{name}.log", "--access-log-json"],
    "metrics": ["--metrics-bind", "127.0.0.1:0"],
    "statsd": ["--statsd-host", "{statsd}"],
}


def start_all(stack: ExitStack, directory: str, statsd: str) -> dict[tuple[str, str], ServerProcess]:
    servers = {}
    for interface, app in APPS.items():
        for variant, extra in VARIANTS.items():
            name = f"{interface}-{variant}".replace(" ", "-")
            args = [app, "-w", "1", "--interface", interface,
                    *(part.format(dir=directory, name=name, statsd=statsd) for part in extra)]
            servers[interface, variant] = stack.enter_context(running(args, workers=1))
    return servers


def measure(server: ServerProcess, duration: float, loadgen: str) -> tuple[float, float]:
    """(requests per second, worker CPU microseconds per request) of one run."""
    worker = server.workers()
    cpu_before, _ = cpu_and_switches(worker)
    run = wrk_rps if loadgen == "wrk" else python_rps
    result = run(server.port, keepalive=True, duration=duration)
    cpu_after, _ = cpu_and_switches(worker)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests")
    return result["rps"], (cpu_after - cpu_before) * 1e6 / max(1, result["requests"])


def per_line_costs(iterations: int = 20_000) -> dict[str, float]:
    """In-process microseconds per request to build the line (and to write it to a file)."""
    import logging
    import time

    from clusterserve import access_log, logs

    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": "/items/42",
               "QUERY_STRING": "page=2", "RAW_URI": "/items/42?page=2", "SERVER_PROTOCOL": "HTTP/1.1",
               "HTTP_USER_AGENT": "wrk", "HTTP_REFERER": "http://example.test/", "HTTP_HOST": "t"}
    record = access_log.RequestRecord(environ, "200 OK", [("Content-Type", "text/plain")], 21,
                                      time.time(), 0.000321, 4242)
    default = access_log.TextFormat(
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"')
    every = access_log.TextFormat(" ".join(f"%({a})s" for a in (*"hlutrmUqHsBbfaTMDLp", "{host}i",
                                                                  "{content-type}o", "{PATH_INFO}e")))
    costs = {}
    for name, render in (("default format", default), ("every atom", every),
                         ("JSON", access_log.json_line)):
        started = time.perf_counter()
        for _ in range(iterations):
            render(record)
        costs[f"format: {name}"] = (time.perf_counter() - started) * 1e6 / iterations
    with tempfile.TemporaryDirectory() as directory:
        handler = logging.FileHandler(f"{directory}/access.log")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logs.access_log.addHandler(handler)
        logs.access_log.setLevel(logging.INFO)
        writer = access_log.AccessLog(default)
        for path, direct in (("straight to the file, flushed later (no log config)", handler),
                             ("through logging, flushed each line (with a log config)", None)):
            logs.direct_access_handler = direct
            started = time.perf_counter()
            for _ in range(iterations):
                writer.write(record)
            writer.flush()
            costs[f"format and write, {path}"] = (time.perf_counter() - started) * 1e6 / iterations
        logs.access_log.removeHandler(handler)
        handler.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="rounds over every variant (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    options = parser.parse_args()
    print("| per request, in-process | µs |\n|---|---:|")
    for name, micros in per_line_costs().items():
        print(f"| {name} | {micros:.2f} |")
    loadgen = options.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    rps: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="observability-cost-") as directory, ExitStack() as stack:
        daemon = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        daemon.bind(("127.0.0.1", 0))  # a statsd daemon that never reads: datagrams are dropped
        servers = start_all(stack, directory, f"127.0.0.1:{daemon.getsockname()[1]}")
        order = list(servers)
        for rep in range(options.reps):
            for key in order[rep % len(order):] + order[:rep % len(order)]:
                one_rps, one_cpu = measure(servers[key], options.duration, loadgen)
                rps.setdefault(key, []).append(one_rps)
                cpu.setdefault(key, []).append(one_cpu)
                print(f"round {rep + 1}: {key[0]} {key[1]}: {one_rps:,.0f} req/s, "
                      f"{one_cpu:.0f} µs CPU/request", file=sys.stderr)
    print(f"\nload: {loadgen}, -t1 -c16 keep-alive, {options.duration:g} s x {options.reps} rounds, "
          "one worker; medians\n")
    print("| interface | on | req/s | vs off | worker CPU µs/request | added µs |")
    print("|---|---|---:|---:|---:|---:|")
    for interface in APPS:
        base_rps = statistics.median(rps[interface, "off"])
        base_cpu = statistics.median(cpu[interface, "off"])
        for variant in VARIANTS:
            r, c = statistics.median(rps[interface, variant]), statistics.median(cpu[interface, variant])
            print(f"| {interface} | {variant} | {r:,.0f} | {(r / base_rps - 1) * 100:+.1f} % | "
                  f"{c:.1f} | {c - base_cpu:+.1f} |")


if __name__ == "__main__":
    main()
