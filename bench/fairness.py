#!/usr/bin/env python3
"""One app thread between keep-alive clients and a client that connects per request.

Run from the repository root with the project's venv (see docs/http.md):

    .venv/bin/python bench/fairness.py                       # every dispatch mode
    .venv/bin/python bench/fairness.py --modes shared --requests 100

For each mode a real ``python -m clusterserve bench.apps:app -w 1 --threads 1``
runs on 127.0.0.1 (tests/harness.py).  Two threads of this process loop
``GET /?sleep=0.01`` on one keep-alive connection each, while the main thread
makes ``--requests`` requests of the same kind, each on a new connection, one
after the other, and times them.  It prints that client's median and worst
latency and how many requests the keep-alive clients made meanwhile.  A
request that takes more than 10 s counts as starved and ends the mode's run.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.bodies import read_head

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /?sleep=0.01 HTTP/1.1\r\nHost: bench\r\n\r\n"
MODES = ("shared", "reuseport", "round-robin")


def read_response(sock: socket.socket, pending: bytes = b"") -> bytes:
    """One response with Content-Length (bench.apps:app always sends it); returns what follows."""
    head, rest = read_head(sock, pending)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return rest[length:]


def keep_alive_client(address: tuple[str, int], stop: threading.Event, counts: list[int]) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        pending = b""
        while not stop.is_set():
            sock.sendall(REQUEST)
            pending = read_response(sock, pending)
            counts.append(1)


def new_connection_request(address: tuple[str, int]) -> float:
    started = time.monotonic()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(REQUEST)
        read_response(sock)
    return time.monotonic() - started


def run(mode: str, requests: int) -> None:
    from tests.harness import running

    with running(["bench.apps:app", "-w", "1", "--threads", "1", "--dispatch", mode], workers=1) as server:
        address = (server.host, server.port)
        stop, counts = threading.Event(), []
        loops = [threading.Thread(target=keep_alive_client, args=(address, stop, counts), daemon=True)
                 for _ in range(2)]
        for thread in loops:
            thread.start()
        time.sleep(0.5)
        latencies = []
        try:
            for _ in range(requests):
                latencies.append(new_connection_request(address))
        except (TimeoutError, ConnectionError) as err:
            print(f"{mode}: starved after {len(latencies)} requests ({err})")
        finally:
            stop.set()
            for thread in loops:
                thread.join(10)
        if latencies:
            print(f"{mode}: {len(latencies)} requests on new connections, median "
                  f"{statistics.median(latencies) * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms; "
                  f"{len(counts)} keep-alive requests meanwhile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated dispatch modes")
    parser.add_argument("--requests", type=int, default=50, help="requests on new connections (default 50)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for mode in args.modes.split(","):
        run(mode, args.requests)


if __name__ == "__main__":
    main()
