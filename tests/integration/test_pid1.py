"""As PID 1 in a container (a new PID namespace): TERM works and orphans are reaped."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from tests.harness import ROOT, wait_until

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                reason="needs unshare and root for a PID namespace")


def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def state(pid):
    try:
        return re.search(r"State:\s+(\w)", open(f"/proc/{pid}/status").read()).group(1)
    except OSError:
        return None


def test_arbiter_as_pid_1_reaps_orphans_and_stops_on_term():
    log = tempfile.NamedTemporaryFile(prefix="pid1-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-m", "clusterserve",
         "tests.apps.basic:orphan_maker", "-w", "2", "-b", "127.0.0.1:0"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def text() -> str:
            with open(log.name) as stream:
                return stream.read()

        assert wait_until(lambda: text().count("ready, serving") == 2, timeout=15), text()
        port = int(re.search(r"Listening at: http://127.0.0.1:(\d+)", text()).group(1))
        assert re.search(r"\[1\] \[INFO\] Starting clusterserve", text())  # it is PID 1 in there
        (arbiter,) = children(proc.pid)
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                assert response.read() == b"orphaned\n"
        os.kill(arbiter, signal.SIGUSR2)  # its exit would end the container: refused
        assert wait_until(lambda: "SIGUSR2 refused: as PID 1" in text())
        time.sleep(0.6)  # the orphaned sleeps have exited by now
        leftovers = [pid for pid in children(arbiter) if state(pid) == "Z" or
                     open(f"/proc/{pid}/cmdline").read().startswith("sleep")]
        assert leftovers == [], "orphans were not reaped"
        os.kill(arbiter, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "Shutting down: exit code 0" in text()
    finally:
        proc.kill()
        proc.wait()
        os.unlink(log.name)


def test_daemon_is_refused_as_pid_1():
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-m", "clusterserve",
         "tests.apps.basic:app", "-D", "-b", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("clusterserve: error: setting 'daemon' from command line: "
                                    "refused as PID 1")
