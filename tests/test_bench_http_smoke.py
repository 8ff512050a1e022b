"""Seconds-long runs of bench/bodies.py and bench/fairness.py, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_bodies_bench_prints_rss_and_cpu():
    out = run_script("bench/bodies.py", "--size", "8M", "--runs", "1")
    assert re.search(r"upload, .*worker RSS [\d.]+ MiB before, [\d.]+ peak, [\d.]+ after", out), out
    assert re.search(r"download, sendfile, .*worker CPU [\d.]+ s user \+ [\d.]+ s system", out), out
    assert re.search(r"download, fallback .*worker CPU [\d.]+ s user \+ [\d.]+ s system", out), out


def test_fairness_bench_prints_latencies():
    out = run_script("bench/fairness.py", "--modes", "shared", "--requests", "5")
    assert re.search(r"shared: 5 requests on new connections, median \d+ ms, worst \d+ ms", out), out
