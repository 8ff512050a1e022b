"""A seconds-long run of bench/peers.py, so the peer benchmark cannot rot.

It runs against clusterserve in every mode and interface (always there) with
the script's own Python load generator, on this interpreter (``--no-setup``:
no venv, no apt-get, no network).  Peers that happen to be installed here
(uvicorn is a dependency; gunicorn and granian usually are not) are started
and checked for the right answers; the others are skipped.  When ``wrk`` is
on the PATH, one short run goes through it too (the Lua script and its
output parsing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import peers

ROOT = Path(__file__).resolve().parent.parent
CLUSTERSERVE = [s.name for s in peers.SERVERS if s.clusterserve]
PLAIN = [s.name for s in peers.SCENARIOS if s.phase == "plain"]


def run_bench(tmp_path: Path, *args: str, timeout: float = 150) -> tuple[dict, str]:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers.py"), "--no-setup", "--no-pin", "--no-docs",
         "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    files = sorted(out.glob("peers-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), proc.stdout


def good_runs(data: dict, scenario: str, server: str) -> list[dict]:
    return [r for r in data["runs"] if r["scenario"] == scenario and r["server"] == server
            and "failed" not in r and not r.get("discarded")]


@pytest.mark.timeout(240)
def test_every_scenario_against_clusterserve(tmp_path: Path) -> None:
    data, stdout = run_bench(
        tmp_path, "--servers", ",".join(CLUSTERSERVE), "--scenarios", ",".join([*PLAIN, "api", "memory"]),
        "--reps", "1", "--duration", "0.3", "--loadgen", "python", "--no-wait", "--retries", "0")

    assert not [k for k in data["skipped"] if k.split(":")[-1] in CLUSTERSERVE and not k.startswith("api:")], \
        data["skipped"]
    for server in CLUSTERSERVE:
        for scenario in PLAIN:
            runs = good_runs(data, scenario, server)
            assert runs, f"no run of {scenario} on {server}: {data['skipped']}"
            assert runs[0]["requests"] > 0 and runs[0]["errors"] == 0 and runs[0]["non2xx"] == 0, runs[0]
            assert runs[0]["server_cpu_s"] >= 0 and len(runs[0]["worker_cpu_s"]) == 2
        memory = data["memory"][server]
        assert memory["workers"] == 2 and memory["uss_per_worker_kib"] > 0 and memory["total"]["pss_kib"] > 0

    # The JSON API runs where its framework is installed (Starlette is in the test extra).
    for interface, module in (("wsgi", "flask"), ("asgi", "starlette")):
        names = [n for n in CLUSTERSERVE if peers.BY_NAME[n].interface == interface]
        if peers.importable(sys.executable, module):
            assert all(good_runs(data, "api", n) for n in names), data["skipped"]
        else:
            assert all(f"api:{n}" in data["skipped"] for n in names)

    assert "### Targets" in stdout and "clusterserve WSGI shared" in stdout

    # The report rebuilds from the JSON file into a docs page (and a chart where matplotlib is).
    docs, chart = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    docs.write_text(f"# Benchmarks\n\nhand-written intro\n\n{peers.BEGIN_MARK}\nold\n{peers.END_MARK}\n\noutro\n")
    result_file = next((tmp_path / "results").glob("peers-*.json"))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--report", str(result_file),
                           "--docs", str(docs), "--chart", str(chart)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written intro") and text.rstrip().endswith("outro")
    assert "\nold\n" not in text and "| **clusterserve ASGI round-robin** |" in text
    if peers.importable(sys.executable, "matplotlib"):
        assert chart.stat().st_size > 10_000


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_runs(tmp_path: Path) -> None:
    data, _ = run_bench(tmp_path, "--servers", "cs-wsgi-shared,cs-asgi-round-robin", "--scenarios", "hello,upload",
                        "--reps", "1", "--duration", "1", "--loadgen", "wrk", "--no-wait", "--retries", "0")
    for server in ("cs-wsgi-shared", "cs-asgi-round-robin"):
        for scenario in ("hello", "upload"):
            (run,) = good_runs(data, scenario, server)
            assert run["loadgen"] == "wrk" and run["requests"] > 0, run
            assert run["errors"] == 0 and run["non2xx"] == 0, run


def installed_peers() -> list[str]:
    return [s.name for s in peers.SERVERS
            if not s.clusterserve and peers.missing_reason(s, sys.executable) is None]


@pytest.mark.timeout(120)
def test_installed_peers_answer_every_scenario(tmp_path: Path) -> None:
    """Each peer installed here starts with the benchmark's command line and answers right."""
    names = installed_peers()
    if not names:
        pytest.skip("no peer server installed in this environment")
    for name in names:
        running = peers.start_server(peers.BY_NAME[name], "plain", sys.executable, 2, tmp_path)
        try:
            running.wait_ready()
            for scenario in peers.SCENARIOS:
                if scenario.phase == "plain":
                    assert peers.check_answer(running, scenario) is None, (name, scenario.name)
        finally:
            running.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_gone(pid) for pid in running.known):
            time.sleep(0.05)
        assert all(_gone(pid) for pid in running.known), name


def _gone(pid: int) -> bool:
    """Exited: no such pid, or a zombie waiting for its (new) parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

