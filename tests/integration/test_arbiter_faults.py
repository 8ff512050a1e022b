"""What workers, operators and the environment do to the arbiter: it stays up and in charge.

Each test sends real signals to real processes and checks that the arbiter
neither exits nor loses track of a worker.
"""

import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.harness import OUTSIDE_SETTINGS, ROOT, children_of, is_alive, kill_tree, wait_until


def _request_in_background(server, path, timeout=40.0):
    """Send one request on a thread; the result (status or exception) lands in a list."""
    outcome = []

    def send():
        conn = server.http(timeout=timeout)
        try:
            conn.request("GET", path)
            outcome.append(conn.getresponse().status)
        except Exception as err:  # noqa: BLE001 - the outcome is what the test looks at
            outcome.append(err)
        finally:
            conn.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, outcome


def test_a_worker_killed_by_a_real_time_signal_is_replaced(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "2"], workers=2)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGRTMIN + 6)
    server.wait_for_log(rf"pid {victim}\) was killed by SIGRTMIN\+6 .*starting a replacement")
    server.wait_ready(3)
    assert server.proc.poll() is None
    assert server.get("/")[0] == 200
    assert len(server.workers()) == 2 and victim not in server.workers()


def _abort_recorder(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "aborted"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        f"RECORD = {str(record)!r}\n"
        "def worker_abort(worker):\n"
        "    with open(RECORD, 'a') as f:\n"
        "        f.write(f'{worker.pid}\\n')\n")
    return config, record


def test_a_request_stuck_on_the_loop_thread_aborts_its_worker(start_server, dispatch, tmp_path):
    """One thread: the request runs on the loop thread, which no SIGTERM can free.  As in
    gunicorn, the worker is aborted (SIGABRT, the worker_abort hook) at ``timeout``."""
    config, record = _abort_recorder(tmp_path)
    server = start_server(["tests.apps.basic:slow", "-w", "1", "--threads", "1", "--timeout", "2",
                           "--dispatch", dispatch, "-c", str(config)], workers=1)
    (stuck,) = server.workers()
    started = time.monotonic()
    thread, outcome = _request_in_background(server, "/?seconds=30")
    server.wait_for_log(rf"pid {stuck}\) exited with code 1 .*reason: stuck_request", timeout=15)
    assert time.monotonic() - started < 8
    assert record.read_text().split() == [str(stuck)]
    server.wait_ready(2)
    assert server.get("/?seconds=0")[0] == 200
    thread.join(timeout=5)
    assert outcome and isinstance(outcome[0], Exception)  # its worker was aborted under it


def test_an_aborted_worker_that_does_not_leave_is_killed(start_server, tmp_path):
    """SIGABRT is blocked on the thread that runs the stuck request: SIGKILL follows."""
    server = start_server(["tests.apps.basic:deaf_to_abort", "-w", "1", "--threads", "1",
                           "--timeout", "2"], workers=1)
    (stuck,) = server.workers()
    started = time.monotonic()
    _request_in_background(server, "/")
    server.wait_for_log(rf"pid {stuck}\) was killed by SIGKILL .*reason: stuck_request", timeout=20)
    assert time.monotonic() - started < 10
    server.wait_ready(2)


def test_a_worker_that_ignores_its_stop_is_killed_at_a_deadline(start_server, dispatch):
    """No heartbeat timeout to catch it: the stop itself has a deadline."""
    server = start_server(["tests.apps.basic:app", "-w", "2", "--timeout", "0", "--graceful-timeout", "1",
                           "--dispatch", dispatch], workers=2)
    frozen = min(server.workers())  # the oldest: the one SIGTTOU retires
    os.kill(frozen, signal.SIGSTOP)
    try:
        server.send(signal.SIGTTOU)
        server.wait_for_log(rf"Retiring worker 1 \(pid {frozen}\)")
        server.wait_for_log(rf"pid {frozen}\) was killed by SIGKILL", timeout=10)
    finally:
        if is_alive(frozen):
            os.kill(frozen, signal.SIGCONT)
    assert server.workers() != [] and frozen not in server.workers()
    assert server.get("/")[0] == 200


def test_ttin_and_ttou_after_a_usr2_hand_over_are_refused(start_server, tmp_path, dispatch):
    pidfile = tmp_path / "server.pid"
    server = start_server(["tests.apps.basic:app", "-w", "1", "--dispatch", dispatch, "-p", str(pidfile)],
                          workers=1)
    old_workers = set(server.workers())
    new_arbiter = None
    try:
        server.send(signal.SIGUSR2)
        server.wait_for_log("SIGUSR2: the new arbiter is ready", timeout=20)
        new_arbiter = int(pidfile.read_text())
        assert wait_until(lambda: not old_workers & set(children_of(server.pid)))
        handed_over = len(server.log())
        server.send(signal.SIGTTIN)
        server.wait_for_log(r"SIGTTIN ignored: this arbiter handed its sockets over", after=handed_over)
        server.send(signal.SIGTTOU)
        server.wait_for_log(r"SIGTTOU ignored: this arbiter handed its sockets over", after=handed_over)
        time.sleep(1.5)
        assert f"[{server.pid}] [INFO] Booting worker" not in server.log()[handed_over:]
        assert children_of(server.pid) == [new_arbiter]  # and no worker
        assert server.stop() == 0
    finally:
        if new_arbiter is not None:
            kill_tree(new_arbiter)


def test_a_reuseport_stop_tells_no_worker_to_adopt(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "3", "--dispatch", "reuseport"], workers=3)
    assert server.get("/")[0] == 200
    assert server.stop() == 0
    assert "Graceful stop" in server.log()
    assert "cannot tell worker" not in server.log()


def test_int_to_the_workers_just_before_the_arbiter_starts_no_replacement(start_server):
    """Ctrl-C signals the whole process group; the kernel may deliver it to a worker, which
    exits, some milliseconds before the arbiter: that exit is part of the stop."""
    server = start_server(["tests.apps.basic:app", "-w", "4"], workers=4)
    workers = server.workers()
    for pid in workers:
        os.kill(pid, signal.SIGINT)
    # Reaped by the arbiter (gone from /proc), so it has seen them exit before its own SIGINT.
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
                      timeout=5, interval=0.005)
    server.send(signal.SIGINT)
    assert server.wait() == 0
    assert "starting a replacement" not in server.log()
    assert "Booting worker 5 " not in server.log()


def test_hup_restores_the_environment_a_new_config_no_longer_sets(start_server, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=file\n")
    config = tmp_path / "clusterserve.toml"
    config.write_text('raw_env = ["DROPPED=raw", "PRESET=overridden"]\n'
                      f'env_file = "{env_file}"\n')
    server = start_server(["tests.apps.basic:env", "-w", "1", "-c", str(config)], workers=1,
                          env={"PRESET": "original"})
    assert [server.get(f"/{name}")[2] for name in ("DROPPED", "PRESET", "FROM_FILE")] == \
        [b"raw", b"overridden", b"file"]
    config.write_text('raw_env = ["KEPT=new"]\n')
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: reload done, generation 2 serves", timeout=20)
    assert [server.get(f"/{name}")[2] for name in ("DROPPED", "PRESET", "FROM_FILE", "KEPT")] == \
        [b"<unset>", b"original", b"<unset>", b"new"]
    # A config that does not load changes nothing: a worker forked afterwards has the same.
    config.write_text('raw_env = ["KEPT=newer"]\nworkers = "many"\n')
    server.send(signal.SIGHUP)
    server.wait_for_log("SIGHUP: configuration error, the running workers stay")
    (worker,) = server.workers()
    os.kill(worker, signal.SIGKILL)
    server.wait_ready(3)
    assert [server.get(f"/{name}")[2] for name in ("DROPPED", "PRESET", "KEPT")] == \
        [b"<unset>", b"original", b"new"]


class _PipeReader:
    """The read end of a server's stdout and stderr pipe, read only when the test says so."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def read_until(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.text)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never logged {pattern!r}:\n{self.text}")
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"output closed before {pattern!r}:\n{self.text}")
                self.text += chunk.decode(errors="replace")
        return match

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return
            self.text += chunk.decode(errors="replace")


def _fill_pipe(write_end: int) -> int:
    """Fill a pipe to the brim without blocking, and without making its other writers non-blocking."""
    filled = 0
    try:
        while True:
            filled += os.pwritev(write_end, [b"-" * 4096 + b"\n"], -1, os.RWF_NOWAIT)
    except BlockingIOError:
        return filled


def _control(path: Path, command: dict, timeout: float = 5.0) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


def test_a_blocked_log_pipe_does_not_freeze_the_arbiter(tmp_path):
    """journald or a docker log pipe whose reader stalls: the arbiter goes on, and what it
    logged meanwhile comes out once the pipe drains (tests/unit/test_log_output.py: what
    it drops past its bound, and says so)."""
    read_end, write_end = os.pipe()
    control = tmp_path / "ctl.sock"
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE_SETTINGS}
    proc = subprocess.Popen([sys.executable, "-m", "clusterserve", "tests.apps.basic:app", "-w", "2",
                             "-b", "127.0.0.1:0", "--control-socket", str(control)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end)
    output = _PipeReader(read_end)
    known = {proc.pid}
    try:
        port = int(output.read_until(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        output.read_until(r"(?s)ready, serving.*ready, serving")
        known.update(children_of(proc.pid))
        output.drain()
        _fill_pipe(write_end)
        victim = children_of(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(children_of(proc.pid)) == 2 and victim not in children_of(proc.pid),
                          timeout=10), "the arbiter did not replace a killed worker"
        known.update(children_of(proc.pid))
        assert _control(control, {"command": "status"})["ok"] is True
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        output.drain()
        proc.send_signal(signal.SIGTTIN)
        output.read_until(rf"(?s)pid {victim}\) was killed by SIGKILL.*SIGTTIN: now 3 workers")
        proc.send_signal(signal.SIGTERM)
        output.read_until(r"Shutting down: exit code 0")
        assert proc.wait(timeout=10) == 0
    finally:
        known.update(children_of(proc.pid))
        for pid in known:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        os.close(read_end)
        os.close(write_end)


GARBAGE = ["not_json", "fds", "huge_count", "bad_reason", "bad_count", "bad_stats", "unknown_kind",
           "bad_decline", "bad_report", "short_report", "unknown_id", "bad_handback", "handback_without_fd"]


@pytest.mark.parametrize(("case", "mode"), [(case, "round-robin") for case in GARBAGE] +
                         [("bad_reason", "shared"), ("bad_count", "reuseport")])
def test_a_worker_that_sends_garbage_is_replaced(start_server, case, mode):
    server = start_server(["tests.apps.basic:channel_garbage", "-w", "2", "--dispatch", mode], workers=2)
    status, _, body = server.get(f"/?case={case}")
    assert status == 200
    sender = int(body.split()[-1])
    server.wait_for_log(rf"Worker \d \(pid {sender}\) sent a malformed message: .*; replacing it")
    server.wait_for_log(rf"pid {sender}\) exited with code 0 .*reason: bad_message")
    assert wait_until(lambda: len(server.workers()) == 2 and sender not in server.workers())
    assert server.proc.poll() is None
    assert server.log().count("Traceback") == 0
    assert server.get("/?case=unknown_kind")[0] == 200  # and the next one is replaced too


def test_the_same_failure_every_tick_is_logged_once_and_backed_off(start_server):
    """The arbiter cannot fork more workers (its descriptor limit is reached): it says so
    with one traceback, once that it backs off, serves on, and recovers when it can."""
    server = start_server(["tests.apps.basic:app", "-w", "1", "--timeout", "0"], workers=1)
    in_use = len(os.listdir(f"/proc/{server.pid}/fd"))
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (in_use + 1, hard))  # a socketpair takes 2
    server.send(signal.SIGTTIN)
    server.wait_for_log(r"SIGTTIN: now 2 workers")
    server.wait_for_log(r"starting a worker keeps failing .*; retrying in", timeout=10)
    time.sleep(3)
    assert server.proc.poll() is None
    assert server.log().count("Traceback") == 1
    assert server.log().count("keeps failing") == 1
    assert server.get("/")[0] == 200
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
    server.wait_for_log(r"starting a worker works again", timeout=70)
    server.wait_ready(2)
    assert len(server.workers()) == 2
