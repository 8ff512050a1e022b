"""The control socket (``clusterserve ctl``), Prometheus metrics and statsd, read as an
operator reads them: the ctl table and JSON, /metrics parsed by prometheus_client's
parser, statsd datagrams caught on a UDP socket."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ROOT, is_alive, kill_tree, running, wait_until

METRICS_AT = re.compile(r"Metrics at: http://127\.0\.0\.1:(\d+)/metrics")
APPS = {"wsgi": "tests.apps.observed:wsgi", "asgi": "tests.apps.observed:asgi"}


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clusterserve", "ctl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)


def status_of(socket_path) -> dict:
    done = ctl("--socket", str(socket_path), "--json", "status")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] is True
    return reply["status"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels (minus pid), parsed by a real parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def get(server, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module", params=[("wsgi", "shared"), ("asgi", "round-robin")],
                ids=["wsgi-shared", "asgi-round-robin"])
def observed(request, tmp_path_factory):
    """One server per interface with the control socket and metrics on."""
    interface, dispatch = request.param
    path = tmp_path_factory.mktemp("control") / "server.ctl"
    args = [APPS[interface], "-w", "2", "--dispatch", dispatch, "--control-socket", str(path),
            "--metrics-bind", "127.0.0.1:0"]
    with running(args, workers=2) as server:
        server.control = path
        server.metrics_port = int(server.wait_for_log(METRICS_AT).group(1))
        server.dispatch = dispatch
        yield server


def test_control_socket_is_private(observed):
    mode = os.stat(observed.control).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_ctl_status_counts_what_was_served(observed):
    before = status_of(observed.control)["totals"]["requests"]
    for _ in range(7):
        assert get(observed, "/") == 200
    assert wait_until(lambda: status_of(observed.control)["totals"]["requests"] == before + 7)
    status = status_of(observed.control)
    assert status["pid"] == observed.pid
    assert status["dispatch"] == observed.dispatch
    assert status["state"] == "running"
    assert sorted(w["pid"] for w in status["workers"]) == sorted(observed.workers())
    for worker in status["workers"]:
        assert worker["state"] == "serving"
        assert worker["generation"] == 1
        assert worker["last_heartbeat"] < 3
        assert worker["rss"] > 1024 * 1024
    assert (status["queued"] is not None) == (observed.dispatch == "round-robin")

    table = ctl("--socket", str(observed.control), "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(line for line in lines if line.startswith("WORKER"))
    assert header.split()[:4] == ["WORKER", "PID", "GEN", "AGE"]
    for pid in observed.workers():
        assert any(line.split()[1:2] == [str(pid)] for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    assert str(status["totals"]["requests"]) in total.split()


def test_metrics_count_requests_by_status_class(observed):
    def counts():
        samples = scrape(observed.metrics_port)
        return {cls: samples[("clusterserve_requests_total", (("status_class", cls),))]
                for cls in ("2xx", "4xx", "5xx")}, \
            samples[("clusterserve_request_duration_seconds_count", ())]

    before, before_count = counts()
    for path, times in (("/", 5), ("/status/404", 3), ("/status/503", 2)):
        for _ in range(times):
            get(observed, path)
    assert wait_until(lambda: counts()[1] == before_count + 10)
    after, _ = counts()
    assert {cls: after[cls] - before[cls] for cls in after} == {"2xx": 5, "4xx": 3, "5xx": 2}

    samples = scrape(observed.metrics_port)
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in samples.items()
                     if name == "clusterserve_request_duration_seconds_bucket")
    assert buckets[-1] == (float("inf"), samples[("clusterserve_request_duration_seconds_count", ())])
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    workers = {dict(labels)["pid"] for (name, labels), _ in samples.items()
               if name == "clusterserve_worker_connections"}
    assert workers == {str(pid) for pid in observed.workers()}
    assert samples[("clusterserve_workers", (("state", "serving"),))] == 2
    queue = ("clusterserve_dispatch_queue_length", ())
    assert (queue in samples) == (observed.dispatch == "round-robin")


def test_in_flight_requests_are_seen(observed):
    slow = threading.Thread(target=get, args=(observed, "/sleep?seconds=4"))
    slow.start()
    try:
        assert wait_until(lambda: status_of(observed.control)["totals"]["in_flight"] == 1, timeout=3.5)
        assert scrape(observed.metrics_port)[("clusterserve_requests_in_flight", ())] == 1
    finally:
        slow.join(timeout=10)
    assert wait_until(lambda: status_of(observed.control)["totals"]["in_flight"] == 0)


def test_a_killed_worker_is_counted_and_its_requests_stay_counted(observed):
    def served():
        return scrape(observed.metrics_port)[("clusterserve_request_duration_seconds_count", ())]

    def crashes():
        return scrape(observed.metrics_port)[("clusterserve_worker_restarts_total", (("reason", "crash"),))]

    for _ in range(4):
        get(observed, "/")
    total = served()
    wait_until(lambda: served() >= total)
    crashes_before = crashes()
    victim = observed.workers()[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: crashes() == crashes_before + 1)
    assert served() >= total  # counters never go back when a worker goes
    assert wait_until(lambda: len(observed.workers()) == 2 and victim not in observed.workers())
    assert status_of(observed.control)["restarts"]["crash"] == crashes_before + 1


def test_metrics_endpoint_refuses_what_it_does_not_serve(observed):
    port = observed.metrics_port
    for path, method, expected in (("/", "GET", 404), ("/metrics", "POST", 405)):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == expected
    with socket.create_connection(("127.0.0.1", port), timeout=10) as garbage:
        garbage.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert garbage.recv(100).startswith(b"HTTP/1.1 400 ")
    # A client that connects and says nothing does not hold up the next scrape.
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        assert ("clusterserve_requests_in_flight", ()) in scrape(port)


def test_bad_control_requests_get_an_error_not_a_crash(observed):
    for line, error in ((b"nonsense\n", "one JSON object per line"),
                        (b'{"command": "explode"}\n', "unknown command"),
                        (b'{"command": ["status"]}\n', "unknown command"),
                        (b'{"command": "status", "verbose": true}\n', "status takes no field 'verbose'"),
                        (b'{"command": "scale", "workers": true}\n', "whole number"),
                        (b'{"command": "scale", "workers": 0}\n', "at least 1")):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(observed.control))
            sock.sendall(line)
            reply = json.loads(sock.makefile().readline())
        assert reply["ok"] is False and error in reply["error"]
    refused = ctl("--socket", str(observed.control), "scale", "0")
    assert refused.returncode == 1
    assert "at least 1" in refused.stderr
    assert is_alive(observed.pid)


def test_ctl_without_a_server_fails_clearly(tmp_path):
    missing = ctl("--socket", str(tmp_path / "none.ctl"), "status")
    assert missing.returncode == 1
    assert "cannot reach the server" in missing.stderr
    unknown = ctl("frobnicate")
    assert unknown.returncode == 2


def test_ctl_scales_reloads_and_stops(tmp_path):
    path = tmp_path / "server.ctl"
    with running(["tests.apps.basic:app", "-w", "1", "--control-socket", str(path)],
                 workers=1) as server:
        done = ctl("--socket", str(path), "scale", "3")
        assert done.returncode == 0 and "now 3 workers" in done.stdout
        assert wait_until(lambda: len(server.workers()) == 3)
        assert ctl("--socket", str(path), "scale", "2").returncode == 0
        assert wait_until(lambda: len(server.workers()) == 2)
        old = set(server.workers())
        done = ctl("reload", "--control-socket", str(path))
        assert done.returncode == 0 and "generation 2" in done.stdout
        server.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=20)
        # The scaled count is kept: the configuration's workers did not change.
        assert wait_until(lambda: len(server.workers()) == 2 and not old & set(server.workers()))
        assert {w["generation"] for w in status_of(path)["workers"]} == {2}
        assert status_of(path)["restarts"]["reload"] == 2
        done = ctl("--socket", str(path), "stop")
        assert done.returncode == 0
        assert server.wait(timeout=15) == 0
        assert not path.exists()


def test_no_control_socket_turns_it_off(tmp_path):
    path = tmp_path / "server.ctl"
    with running(["tests.apps.basic:app", "-w", "1", "--control-socket", str(path),
                  "--no-control-socket"], workers=1):
        assert not path.exists()


def test_max_requests_restarts_are_counted(tmp_path):
    with running(["tests.apps.basic:app", "-w", "1", "--max-requests", "3",
                  "--metrics-bind", "127.0.0.1:0"], workers=1) as server:
        port = int(server.wait_for_log(METRICS_AT).group(1))
        for _ in range(4):
            server.get("/")
        assert wait_until(lambda: scrape(port)[
            ("clusterserve_worker_restarts_total", (("reason", "max_requests"),))] == 1)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_statsd_gets_gunicorns_metric_names(interface):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(10)
        address = f"127.0.0.1:{daemon.getsockname()[1]}"
        with running([APPS[interface], "-w", "2", "--statsd-host", address,
                      "--statsd-prefix", "shop.web", "--dogstatsd-tags", "env:test"],
                     workers=2) as server:
            assert server.get("/status/404")[0] == 404
            lines: set[str] = set()
            while not {"shop.web.gunicorn.requests:1|c|#env:test",
                       "shop.web.gunicorn.request.status.404:1|c|#env:test",
                       "shop.web.gunicorn.workers:2|g|#env:test"} <= lines:
                lines.update(daemon.recv(4096).decode().splitlines())
            assert any(re.fullmatch(r"shop\.web\.gunicorn\.request\.duration:\d+\.\d+\|ms\|#env:test",
                                    line) for line in lines)


def test_metrics_bind_without_a_port_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "clusterserve", "tests.apps.basic:app",
                           "--metrics-bind", "unix:/tmp/metrics.sock"], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "metrics_bind" in done.stderr and "HOST:PORT" in done.stderr


def test_after_usr2_ctl_reaches_the_new_arbiter(start_server, tmp_path):
    path = tmp_path / "server.ctl"
    pidfile = tmp_path / "server.pid"
    server = start_server(["tests.apps.basic:app", "-w", "1", "-p", str(pidfile),
                           "--control-socket", str(path)], workers=1)
    new_arbiter = None
    try:
        server.send(signal.SIGUSR2)
        server.wait_for_log("SIGUSR2: the new arbiter is ready", timeout=20)
        new_arbiter = int(pidfile.read_text())
        assert status_of(path)["pid"] == new_arbiter
        server.send(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        assert status_of(path)["pid"] == new_arbiter  # the old arbiter left the path alone
    finally:
        if new_arbiter is not None:
            kill_tree(new_arbiter)


def test_ctl_takes_the_servers_flag_name_and_options_after_the_command(tmp_path):
    path = tmp_path / "server.ctl"
    with running(["tests.apps.basic:app", "-w", "1", "--control-socket", str(path)], workers=1):
        for args in (["--control-socket", str(path), "status", "--json"],
                     ["status", "--json", "--control-socket", str(path)],
                     ["--json", "status", "-s", str(path)]):
            done = ctl(*args)
            assert done.returncode == 0, (args, done.stderr)
            assert json.loads(done.stdout)["ok"] is True


def test_one_rule_for_scaled_counts_on_hup(tmp_path):
    """TTIN, TTOU and ctl scale set a count a HUP keeps, unless the config's workers changed."""
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    path = tmp_path / "server.ctl"
    with running(["tests.apps.basic:app", "-c", str(conf), "--control-socket", str(path)],
                 workers=1) as server:
        for count in (2, 3):  # one at a time: two pending signals of a kind are one
            server.send(signal.SIGTTIN)
            assert wait_until(lambda count=count: status_of(path)["workers_wanted"] == count)
        assert wait_until(lambda: len(server.workers()) == 3)
        server.send(signal.SIGTTOU)
        assert wait_until(lambda: len(server.workers()) == 2)
        server.send(signal.SIGHUP)
        server.wait_for_log("reload done, generation 2 serves", timeout=20)
        assert wait_until(lambda: [w["generation"] for w in status_of(path)["workers"]] == [2, 2])
        assert ctl("scale", "4", "--control-socket", str(path)).returncode == 0
        server.send(signal.SIGHUP)
        server.wait_for_log("reload done, generation 3 serves", timeout=20)
        assert wait_until(lambda: [w["generation"] for w in status_of(path)["workers"]] == [3] * 4)
        conf.write_text("workers = 3\n")  # the configuration's own change wins
        server.send(signal.SIGHUP)
        server.wait_for_log("reload done, generation 4 serves", timeout=20)
        assert wait_until(lambda: [w["generation"] for w in status_of(path)["workers"]] == [4] * 3)
        assert status_of(path)["workers_wanted"] == 3
