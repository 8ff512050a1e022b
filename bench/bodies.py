#!/usr/bin/env python3
"""Large bodies through the WSGI worker: memory under an upload, CPU of sendfile.

Run from the repository root with the project's venv (see docs/http.md):

    .venv/bin/python bench/bodies.py              # 1 GiB each way
    .venv/bin/python bench/bodies.py --size 256M  # quicker

Each part starts a real ``python -m clusterserve bench.bodies:app -w 1
--threads 2`` on 127.0.0.1 (tests/harness.py) and reads the worker's
numbers from /proc:

- upload: the client sends ``--size`` bytes with ``Content-Length``; the app
  reads ``wsgi.input`` 64 KiB at a time.  The worker's VmRSS is printed
  before, at its peak during (sampled every 10 ms) and after.
- download: a file of ``--size`` bytes goes out through
  ``wsgi.file_wrapper``, once as a real file (``os.sendfile``) and once
  through a wrapper that hides its ``fileno`` (the fallback: 64 KiB reads
  written with ``sendall``).  The worker's CPU time (user + system, from
  /proc/PID/stat, the median of ``--runs``) is printed for each, with the
  wall time.  On loopback the kernel also charges the receiving side's TCP
  work to the sender's system time, so the difference is in user time.

The client is this process; it discards what it reads.  Every loop is
bounded by the size; the temporary file is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 65536
MIB = 1024 * 1024


# -- the app (imported by the server as bench.bodies:app) ----------------------------


class _NoFileno:
    """A file seen only through read(): wsgi.file_wrapper has to iterate it."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def close(self) -> None:
        self._handle.close()


def app(environ: dict[str, Any], start_response: Any) -> Any:
    """POST /upload reads the body in 64 KiB reads; GET /file?path=P[&copy=1] sends P."""
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/upload":
        stream, total = environ["wsgi.input"], 0
        while data := stream.read(CHUNK):
            total += len(data)
        body = f"{total}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    handle = open(query["path"], "rb")
    size = os.fstat(handle.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    wrapped = _NoFileno(handle) if query.get("copy") else handle
    return environ["wsgi.file_wrapper"](wrapped, CHUNK)


# -- measuring -------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples a process's VmRSS every 10 ms on a thread, while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_mib(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def read_head(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes]:
    """A response head (after ``pending``, bytes read already) and what came after it."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def upload(server: Any, size: int) -> dict[str, float]:
    worker = server.workers()[0]
    block = os.urandom(MIB)
    started = time.monotonic()
    with PeakRss(worker) as rss, server.connect(timeout=60) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // MIB):
            sock.sendall(block)
        sock.sendall(block[:size % MIB])
        head, rest = read_head(sock)
    elapsed = time.monotonic() - started
    if not head.startswith(b"HTTP/1.1 200 ") or not rest.startswith(b"%d" % size):
        raise RuntimeError(f"upload failed: {head!r} {rest!r}")
    return {"rss_before_mib": rss.before, "rss_peak_mib": rss.peak, "rss_after_mib": rss_mib(worker),
            "seconds": elapsed, "mib_per_s": size / MIB / elapsed}


def download(server: Any, path: Path, size: int, copy: bool) -> dict[str, float]:
    worker = server.workers()[0]
    cpu_before = cpu_seconds(worker)
    started = time.monotonic()
    received = 0
    buffer = bytearray(1024 * 1024)
    with server.connect(timeout=60) as sock:
        query = f"path={path}" + ("&copy=1" if copy else "")
        sock.sendall(f"GET /file?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head, rest = read_head(sock)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"download failed: {head!r}")
        received = len(rest)
        while received < size:
            count = sock.recv_into(buffer)
            if not count:
                raise RuntimeError(f"the server closed after {received} of {size} bytes")
            received += count
    elapsed = time.monotonic() - started
    time.sleep(0.2)  # let the worker's last accounting tick land
    user, system = (after - before for after, before in zip(cpu_seconds(worker), cpu_before, strict=True))
    return {"user_s": user, "system_s": system, "seconds": elapsed, "mib_per_s": size / MIB / elapsed}


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}
    number, unit = text.rstrip("KMGkmg"), text[len(text.rstrip("KMGkmg")):].upper()
    return int(float(number) * units[unit])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="bytes each way, e.g. 1G, 256M (default 1G)")
    parser.add_argument("--runs", type=int, default=3, help="downloads of each kind (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size)
    sys.path.insert(0, str(ROOT))
    from tests.harness import running

    print(f"size {size / MIB:.0f} MiB; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    with running(["bench.bodies:app", "-w", "1", "--threads", "2", "--timeout", "120"],
                 workers=1) as server:
        result = upload(server, size)
        print("upload, wsgi.input read 64 KiB at a time: worker RSS "
              f"{result['rss_before_mib']:.1f} MiB before, {result['rss_peak_mib']:.1f} peak, "
              f"{result['rss_after_mib']:.1f} after; {result['seconds']:.1f} s "
              f"({result['mib_per_s']:.0f} MiB/s)")
        with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
            path = Path(tmp) / "file.bin"
            block = os.urandom(MIB)
            with open(path, "wb") as stream:
                for _ in range(size // MIB):
                    stream.write(block)
                stream.write(block[:size % MIB])
            download(server, path, size, copy=False)  # warm the page cache
            for label, copy in (("sendfile", False), ("fallback (read + sendall)", True)):
                runs = sorted((download(server, path, size, copy) for _ in range(args.runs)),
                              key=lambda run: run["user_s"] + run["system_s"])
                result = runs[len(runs) // 2]
                print(f"download, {label}, median of {args.runs}: worker CPU {result['user_s']:.2f} s "
                      f"user + {result['system_s']:.2f} s system; {result['seconds']:.2f} s "
                      f"({result['mib_per_s']:.0f} MiB/s)")


if __name__ == "__main__":
    main()
