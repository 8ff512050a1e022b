#!/usr/bin/env python3
"""What the access log costs: hello-world requests per second with it off, on, and as JSON.

Run from the repository root, with the project's venv, on a quiet machine:

    .venv/bin/python bench/access_log_cost.py            # 5 rounds of 3 s per variant
    .venv/bin/python bench/access_log_cost.py --reps 3 --duration 2

Six servers (WSGI and ASGI, each with the access log off, in gunicorn's
default format, and as JSON lines; one worker each, the log written to a
file in a temporary directory) run side by side on 127.0.0.1 and take
turns, in a rotating order, under ``wrk -t1 -c16`` with keep-alive (or a
bounded Python keep-alive client when ``wrk`` is not installed).  Besides
requests per second it reads the worker's CPU time from ``/proc``: CPU
microseconds per request are steadier than req/s on a shared machine.
Medians over the rounds are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch import cpu_and_switches, python_rps, wrk_rps  # noqa: E402
from tests.harness import ServerProcess, running  # noqa: E402

APPS = {"wsgi": "bench.apps:app", "asgi": "bench.apps:asgi_app"}
ACCESS = {
    "off": [],
    "text": ["--access-logfile", "{dir}/{name}.log"],
    "json": ["--access-logfile", "{dir}/{name}.log", "--access-log-json"],
}


def start_all(stack: ExitStack, directory: str) -> dict[tuple[str, str], ServerProcess]:
    servers = {}
    for interface, app in APPS.items():
        for access, extra in ACCESS.items():
            name = f"{interface}-{access}"
            args = [app, "-w", "1", "--interface", interface,
                    *(part.format(dir=directory, name=name) for part in extra)]
            servers[interface, access] = stack.enter_context(running(args, workers=1))
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
    with tempfile.TemporaryDirectory(prefix="access-log-cost-") as directory, ExitStack() as stack:
        servers = start_all(stack, directory)
        order = list(servers)
        for rep in range(options.reps):
            for key in order[rep % len(order):] + order[:rep % len(order)]:
                one_rps, one_cpu = measure(servers[key], options.duration, loadgen)
                rps.setdefault(key, []).append(one_rps)
                cpu.setdefault(key, []).append(one_cpu)
                print(f"round {rep + 1}: {key[0]} access log {key[1]}: {one_rps:,.0f} req/s, "
                      f"{one_cpu:.0f} µs CPU/request", file=sys.stderr)
    print(f"\nload: {loadgen}, -t1 -c16 keep-alive, {options.duration:g} s x {options.reps} rounds, "
          "one worker; medians\n")
    print("| interface | access log | req/s | vs off | worker CPU µs/request | added µs |")
    print("|---|---|---:|---:|---:|---:|")
    for interface in APPS:
        base_rps = statistics.median(rps[interface, "off"])
        base_cpu = statistics.median(cpu[interface, "off"])
        for access in ACCESS:
            r, c = statistics.median(rps[interface, access]), statistics.median(cpu[interface, access])
            print(f"| {interface} | {access} | {r:,.0f} | {(r / base_rps - 1) * 100:+.1f} % | "
                  f"{c:.1f} | {c - base_cpu:+.1f} |")


if __name__ == "__main__":
    main()
