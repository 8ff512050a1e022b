"""A full disk under the log files fails no request and stops nothing; the logs resume
when the disk has room again.

The error log and the access log go to a small tmpfs of their own, which the test
fills to the last page (mounting needs root: the test is skipped without it).  While
it is full, the server's writes fail with ENOSPC: requests are served all the same,
including those whose app writes to ``wsgi.errors``, and a worker that dies is
replaced.  Once the filler is gone, new lines reach both files.  With the access log
alone on the full disk, the error log says so every 10 s, not on every write.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.faults import LogDisk
from clusterserve import access_log
from tests.harness import ServerProcess, children_of, request, wait_until

# Enough that every log file's last page (what a full tmpfs still takes) overflows.
REQUESTS = 200


@pytest.fixture
def log_disk(tmp_path):
    disk = LogDisk(tmp_path / "logs", 1 << 20)
    refused = disk.mount()
    if refused is not None:
        pytest.skip(f"cannot mount a tmpfs for the logs: {refused}")
    yield disk
    disk.unmount()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_full_log_disk_fails_no_request_and_the_logs_resume(log_disk, interface):
    server = ServerProcess([f"tests.apps.faulty:{interface}", "-w", "1",
                            "--error-logfile", str(log_disk.error_log),
                            "--access-logfile", str(log_disk.access_log)])
    server.log_path = log_disk.error_log
    try:
        server.start(wait_ready=1)
        log_disk.fill()
        try:
            assert [request(server, "GET", "/note")[0] for _ in range(REQUESTS)] == [200] * REQUESTS
            (worker,) = server.workers()
            os.kill(worker, signal.SIGKILL)
            assert wait_until(lambda: [p for p in children_of(server.pid) if p != worker], timeout=15)
            assert wait_until(lambda: request(server, "GET", "/")[0] == 200, timeout=15)
            assert [request(server, "GET", "/note")[0] for _ in range(REQUESTS)] == [200] * REQUESTS
            assert server.proc is not None and server.proc.poll() is None
        finally:
            log_disk.free()
        assert request(server, "GET", "/note?after-the-disk-had-room")[0] == 200
        assert wait_until(lambda: b"/note?after-the-disk-had-room" in log_disk.access_log.read_bytes(),
                          timeout=5)
        assert server.stop() == 0
        assert f"[{server.pid}] [INFO] Shutting down" in server.log()
        # The disk was full: some write said so (in the error log's last page, or on stderr).
        stderr = Path(server.log_file.name).read_text(errors="replace")
        assert "No space left on device" in server.log() + stderr
    finally:
        server.kill_all()
        os.unlink(server.log_file.name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_full_access_log_disk_is_said_every_10_s_not_on_every_write(log_disk, interface):
    """The error log (on another disk) gets one line about it per worker every 10 s; before,
    it got a line on every flush (10 a second) and a traceback every few dozen requests."""
    server = ServerProcess([f"tests.apps.faulty:{interface}", "-w", "1",
                            "--access-logfile", str(log_disk.access_log)])
    try:
        server.start(wait_ready=1)
        log_disk.fill()
        started = time.monotonic()
        conn = server.http()
        for _ in range(REQUESTS * 5):
            conn.request("GET", "/")
            assert conn.getresponse().read().startswith(b"/ from ")
        conn.close()
        time.sleep(3 * access_log.FLUSH_DELAY)  # the last flush fails too
        elapsed = time.monotonic() - started
        said = server.log().count("cannot write the access log: [Errno 28] No space left on device")
        assert 1 <= said <= 1 + elapsed // 10, server.log()
        assert "Traceback" not in server.log()
    finally:
        log_disk.free()
        server.kill_all()
        os.unlink(server.log_file.name)
