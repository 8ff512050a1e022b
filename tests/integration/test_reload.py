"""SIGHUP: a new generation of workers replaces the old one without failing a request."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.harness import children_of, is_alive, kill_tree, pid_on_new_connection, wait_until

APP_TEMPLATE = {
    "wsgi": '''
import os
def app(environ, start_response):
    body = ("{text} " + str(os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
''',
    "asgi": '''
import os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("{text} " + str(os.getpid())).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
''',
}


def write_app(directory, interface, text):
    path = directory / "reloadable.py"
    path.write_text(APP_TEMPLATE[interface].format(text=text))
    # Same size and same second would let Python reuse a stale .pyc: rule it out.
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)


def body_of(server):
    return server.get("/")[2].decode()


@pytest.fixture(params=["wsgi", "asgi"])
def interface(request):
    return request.param


def test_hup_reloads_code_and_replaces_every_worker(start_server, tmp_path, dispatch, interface):
    write_app(tmp_path, interface, "first")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path), "--dispatch", dispatch],
                          workers=2)
    old = set(server.workers())
    assert body_of(server).startswith("first ")
    write_app(tmp_path, interface, "second version")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: reload done, generation 2 serves")
    assert wait_until(lambda: len(server.workers()) == 2 and not old & set(server.workers()))
    replies = {body_of(server) for _ in range(10)}
    assert all(reply.startswith("second version ") for reply in replies)


def test_hup_with_a_broken_app_keeps_the_old_workers(start_server, tmp_path, interface):
    write_app(tmp_path, interface, "good")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path)], workers=2)
    old = set(server.workers())
    (tmp_path / "reloadable.py").write_text("raise RuntimeError('broken on purpose')\n")
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    server.send(signal.SIGHUP)
    server.wait_for_log(r"SIGHUP: generation 2 failed to boot \(RuntimeError: broken on purpose\)")
    assert wait_until(lambda: set(server.workers()) == old, timeout=20), server.log()
    assert body_of(server).startswith("good "), server.log()
    write_app(tmp_path, interface, "fixed")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: reload done, generation 3 serves")
    assert wait_until(lambda: body_of(server).startswith("fixed "))


def test_hup_rereads_the_config_file(start_server, tmp_path):
    write_app(tmp_path, "wsgi", "config")
    config = tmp_path / "clusterserve.toml"
    config.write_text("workers = 2\n")
    server = start_server(["reloadable:app", "-c", str(config), "--chdir", str(tmp_path)], workers=2)
    config.write_text("workers = 3\n")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: starting 3 workers of generation 2")
    server.wait_for_log("SIGHUP: reload done")
    assert wait_until(lambda: len(server.workers()) == 3)


def test_hup_with_a_bad_config_keeps_running(start_server, tmp_path):
    write_app(tmp_path, "wsgi", "steady")
    config = tmp_path / "clusterserve.toml"
    config.write_text("workers = 2\n")
    server = start_server(["reloadable:app", "-c", str(config), "--chdir", str(tmp_path)], workers=2)
    old = set(server.workers())
    config.write_text("workers = 'many'\n")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: configuration error, the running workers stay: setting 'workers'")
    assert set(server.workers()) == old and body_of(server).startswith("steady ")


class LoadClient(threading.Thread):
    """Requests in a loop until stopped: on new connections, or keep-alive ones.

    A keep-alive client retries once, on a new connection, only when the
    server closed an idle connection before answering (as browsers do).
    """

    def __init__(self, port, keep_alive, deadline):
        super().__init__(daemon=True)
        self.port, self.keep_alive, self.deadline = port, keep_alive, deadline
        self.ok = self.failed = self.retried = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        sock, served = None, 0
        while not self.stop.is_set() and time.monotonic() < self.deadline and self.ok < 5000:
            started = time.monotonic()
            if sock is None:
                sock, served = socket.create_connection(("127.0.0.1", self.port), timeout=10), 0
            try:
                reply = self._exchange(sock)
            except OSError as err:
                reply, error = b"", err
            else:
                error = None
            if reply.startswith(b"HTTP/1.1 200"):
                self.ok += 1
                served += 1
                if not self.keep_alive or b"connection: close" in reply.lower():
                    sock.close()
                    sock = None
                continue
            sock.close()
            sock = None
            if not reply and served and self.keep_alive:
                self.retried += 1  # an idle keep-alive connection closed under us: retry
                continue
            self.failed += 1
            self.errors.append((started, time.monotonic(), error or reply[:100]))
        if sock is not None:
            sock.close()

    def _exchange(self, sock):
        close = b"" if self.keep_alive else b"Connection: close\r\n"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n" + close + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            body += chunk
        return data


def test_no_request_fails_during_reloads_and_scaling(start_server, tmp_path, dispatch, interface):
    write_app(tmp_path, interface, "load")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path), "--dispatch", dispatch,
                           "--keep-alive", "5"], workers=2)
    deadline = time.monotonic() + 25
    clients = [LoadClient(server.port, keep_alive=index % 2 == 0, deadline=deadline) for index in range(16)]
    for client in clients:
        client.start()
    generations = []
    killed_at = None
    count = 2
    for step in ("HUP", "TTIN", "HUP", "TTOU", "KILL", "HUP"):
        time.sleep(0.6)
        before = set(server.workers())
        if step == "KILL":  # a crash: only what that worker had in flight may fail
            ready_so_far = server.log().count(" ready, serving ")
            killed_at = time.monotonic()
            os.kill(min(before), signal.SIGKILL)
            server.wait_ready(ready_so_far + 1, timeout=15)  # its replacement
            continue
        server.send(getattr(signal, "SIG" + step))
        if step == "HUP":
            generations.append(before)
            server.wait_for_log(f"reload done, generation {len(generations) + 1} serves", timeout=15)
        # TTIN and TTOU change the count, and a HUP keeps it (-w did not change).
        count += {"TTIN": 1, "TTOU": -1}.get(step, 0)
        if step != "TTIN":  # retired workers leave while new connections keep coming
            assert wait_until(lambda count=count: len(server.workers()) == count, timeout=5), server.log()
    time.sleep(0.6)
    for client in clients:
        client.stop.set()
        client.join(timeout=15)
    total_ok = sum(c.ok for c in clients)
    # A request in flight at the crash, or sent within a second of it, may fail.
    failures = [(started < killed_at + 1.0 and ended >= killed_at, error)
                for c in clients for started, ended, error in c.errors]
    in_crash = [error for crash, error in failures if crash]
    elsewhere = [error for crash, error in failures if not crash]
    assert total_ok > 100
    assert elsewhere == [], f"{len(elsewhere)} failed of {total_ok}: {elsewhere[:5]}"
    assert len(in_crash) <= len(clients), in_crash  # at most one request in flight per client
    assert all(not gen & set(server.workers()) for gen in generations)


# The servers of the full-rate test: WSGI, and ASGI on each of uvicorn's protocols.
FULL_RATE_SERVERS = {"wsgi": ("wsgi", []), "asgi-h11": ("asgi", ["--http", "h11"]),
                     "asgi-httptools": ("asgi", ["--http", "httptools"])}
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@pytest.mark.http_path
@pytest.mark.parametrize("connections", [20, 200])
@pytest.mark.parametrize("kind", list(FULL_RATE_SERVERS))
def test_keep_alive_clients_at_full_rate_lose_nothing_to_reloads_and_scaling(
        start_server, tmp_path, dispatch, kind, connections):
    """wrk keeps every connection busy, sending each request the moment the last response
    is in: a worker that closes a connection under it loses a request (a read error).
    Two HUPs, a TTIN and a TTOU while it runs: not one request may fail."""
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is not installed (apt-get install wrk; .ci/run installs it)")
    interface, extra = FULL_RATE_SERVERS[kind]
    write_app(tmp_path, interface, "full rate")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path), "--dispatch", dispatch,
                           *extra], workers=2)
    # A response slower than wrk's 2 s default (a busy CI machine) is slow, not lost.
    load = subprocess.Popen([wrk, "-t1", f"-c{connections}", "-d7s", "--timeout", "10s",
                             f"http://127.0.0.1:{server.port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = time.monotonic()
        for at, step in ((1.0, "HUP"), (2.5, "HUP"), (4.0, "TTIN"), (5.5, "TTOU")):
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            server.send(getattr(signal, "SIG" + step))
        report = load.communicate(timeout=30)[0]
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert "reload done, generation 3 serves" in server.log(), server.log()
    requests = int(re.search(r"(\d+) requests in", report).group(1))
    assert WRK_ERRORS.search(report) is None and "Non-2xx" not in report, report
    assert requests > 2000, report
    assert wait_until(lambda: len(server.workers()) == 2, timeout=10), server.log()


@pytest.mark.parametrize("mode", ["shared", "round-robin", "reuseport"])
def test_usr2_upgrades_the_arbiter_without_failing_a_request(start_server, tmp_path, mode, interface):
    write_app(tmp_path, interface, "before")
    pidfile = tmp_path / "server.pid"
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path), "--dispatch", mode,
                           "-p", str(pidfile), "--keep-alive", "5"], workers=2)
    old_workers = set(server.workers())
    new_arbiter = None
    clients = [LoadClient(server.port, keep_alive=index % 2 == 0, deadline=time.monotonic() + 20)
               for index in range(6)]
    try:
        for client in clients:
            client.start()
        time.sleep(0.5)
        write_app(tmp_path, interface, "after the upgrade")
        server.send(signal.SIGUSR2)
        server.wait_for_log("SIGUSR2: the new arbiter is ready; stopping our workers", timeout=15)
        new_arbiter = int(pidfile.read_text())
        assert new_arbiter != server.pid
        assert (tmp_path / "server.pid.oldbin").read_text().strip() == str(server.pid)
        assert wait_until(lambda: not old_workers & set(children_of(server.pid)))
        assert body_of(server).startswith("after the upgrade ")
        server.send(signal.SIGTERM)
        assert server.wait() == 0
        time.sleep(0.5)
        for client in clients:
            client.stop.set()
            client.join(timeout=15)
        failures = [e for c in clients for _, e in c.errors]
        assert failures == [], failures[:5]
        assert sum(c.ok for c in clients) > 100
        assert body_of(server).startswith("after the upgrade ")  # the new arbiter goes on alone
        assert not (tmp_path / "server.pid.oldbin").exists()
    finally:
        for client in clients:
            client.stop.set()
        if new_arbiter is not None:
            kill_tree(new_arbiter)


def test_winch_stops_the_workers_and_keeps_the_arbiter(start_server, dispatch):
    server = start_server(["tests.apps.basic:app", "-w", "2", "--dispatch", dispatch], workers=2)
    server.send(signal.SIGWINCH)
    assert wait_until(lambda: server.workers() == [])
    time.sleep(1.2)
    assert server.workers() == [] and server.proc.poll() is None
    server.send(signal.SIGTTIN)
    server.wait_ready(3)
    # Every listening socket is watched again (in reuseport mode, each has a queue of its own).
    assert all(pid_on_new_connection(server) == server.workers()[0] for _ in range(20))


@pytest.mark.parametrize("engine", ["poll", "watchfiles"])
def test_reload_flag_restarts_workers_when_a_file_changes(start_server, tmp_path, engine):
    write_app(tmp_path, "wsgi", "original")
    server = start_server(["reloadable:app", "-w", "1", "--chdir", str(tmp_path), "--reload",
                           "--reload-engine", engine], workers=1)
    server.wait_for_log(f"Reload on file changes is on \\({engine}\\)")
    time.sleep(0.5 if engine == "watchfiles" else 1.2)  # let the watcher take its first look
    write_app(tmp_path, "wsgi", "edited on disk")
    server.wait_for_log(r"reload: .*reloadable\.py changed", timeout=10)
    server.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=10)
    assert body_of(server).startswith("edited on disk ")
    (watcher,) = [pid for pid in children_of(server.pid)
                  if open(f"/proc/{pid}/cmdline").read().startswith("clusterserve: reloader")]
    assert server.stop() == 0
    assert wait_until(lambda: not is_alive(watcher))


def test_hup_rereads_env_from_the_start_directory_with_a_relative_chdir(start_server, tmp_path):
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    (app_dir / "envapp.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ.get('GREETING', '-').encode()]\n")
    config = tmp_path / "clusterserve.toml"
    config.write_text('raw_env = ["GREETING=one"]\n')
    server = start_server(["envapp:app", "-w", "1", "--chdir", "site", "-c", "clusterserve.toml"],
                          cwd=tmp_path, workers=1)
    assert server.get("/")[2] == b"one"
    config.write_text('raw_env = ["GREETING=two"]\n')
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=20)
    assert server.get("/")[2] == b"two"


def test_ttin_during_a_reload_still_completes_it(start_server, tmp_path):
    write_app(tmp_path, "wsgi", "slow start")
    (tmp_path / "reloadable.py").write_text("import time\ntime.sleep(1)\n" + APP_TEMPLATE["wsgi"].format(
        text="slow start"))
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path)], workers=2)
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: starting 2 workers of generation 2")
    server.send(signal.SIGTTIN)
    server.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=20)
    assert wait_until(lambda: len(server.workers()) == 3, timeout=20)


def test_usr1_reopens_the_workers_access_log(start_server, tmp_path):
    access = tmp_path / "access.log"
    server = start_server(["tests.apps.basic:app", "-w", "2", "--access-logfile", str(access)], workers=2)
    server.get("/before")
    assert wait_until(lambda: access.exists() and "/before" in access.read_text())
    access.rename(tmp_path / "access.log.1")  # what logrotate does
    server.send(signal.SIGUSR1)
    server.wait_for_log("SIGUSR1: log files reopened")
    time.sleep(0.5)
    for _ in range(4):
        server.get("/after")  # whichever worker answers writes to the new file
    assert wait_until(lambda: access.exists() and access.read_text().count("/after") == 4)
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def _slow_booting_app(directory, text):
    (directory / "reloadable.py").write_text(
        "import time\ntime.sleep(1.5)\n" + APP_TEMPLATE["wsgi"].format(text=text))
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)


def test_hup_during_a_hup_replaces_the_generation_still_booting(start_server, tmp_path):
    write_app(tmp_path, "wsgi", "v1")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path)], workers=2)
    _slow_booting_app(tmp_path, "v2")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: starting 2 workers of generation 2")
    write_app(tmp_path, "wsgi", "v3 the newest")
    server.send(signal.SIGHUP)  # generation 2 is still importing
    server.wait_for_log("its reload was superseded by a newer SIGHUP")
    server.wait_for_log("SIGHUP: reload done, generation 3 serves", timeout=20)
    assert "reload done, generation 2" not in server.log()
    assert wait_until(lambda: len(server.workers()) == 2, timeout=20)
    assert body_of(server).startswith("v3 the newest ")


def test_term_during_a_hup_stops_both_generations(start_server, tmp_path):
    write_app(tmp_path, "wsgi", "v1")
    server = start_server(["reloadable:app", "-w", "2", "--chdir", str(tmp_path)], workers=2)
    _slow_booting_app(tmp_path, "v2")
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: starting 2 workers of generation 2")
    assert wait_until(lambda: len(server.workers()) == 4)  # the line is logged before the forks
    everyone = server.workers()
    server.send(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    assert not any(is_alive(pid) for pid in everyone)
