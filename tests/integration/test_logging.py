"""The error log, the access log and their settings, read from the real files."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from clusterserve import __version__
from tests.harness import ROOT, ServerProcess, request, running, wait_until

INTERFACES = {"wsgi": "tests.apps.logging_apps:wsgi", "asgi": "tests.apps.logging_apps:asgi"}
# Every atom gunicorn has, each in its own |-separated field.
ALL_ATOMS = ("h l u t r m U q H s B b f a T M D L p {x-request-id}i {content-type}i {x-out}o "
             "{REQUEST_METHOD}e {wsgi.url_scheme}e {no-such-header}i").split()
ACCESS_FORMAT = "|".join(f"%({atom})s" for atom in ALL_ATOMS)
REQUEST_HEADERS = {
    "X-Request-Id": 'abc "1"',
    "Content-Type": "text/x-test",
    "Referer": "http://example.test/from",
    "User-Agent": "logging-test/1.0",
    "Authorization": "Basic " + base64.b64encode(b"alice:secret").decode(),
}


def exit_line(pid: str = r"\d+") -> re.Pattern[str]:
    """The arbiter's line about a worker that is gone: (pid, how, reason, detail)."""
    return re.compile(rf"Worker \d+ \(pid ({pid})\) (exited with code -?\d+|was killed by \w+) "
                      r"after \d+ connections and \d+ requests; reason: (\w+)(?: \((.*)\))?"
                      r"(?:; starting a replacement)?$", re.M)


@pytest.fixture(scope="module", params=sorted(INTERFACES))
def logged(request, tmp_path_factory):
    """A server per interface with both logs in files, every atom, and capture_output."""
    interface = request.param
    directory = tmp_path_factory.mktemp(f"logs-{interface}")
    args = [INTERFACES[interface], "-w", "2", "--threads", "3", "--interface", interface,
            "--lifespan", "on", "--error-logfile", str(directory / "error.log"), "--capture-output",
            "--access-logfile", str(directory / "access.log"), "--access-logformat", ACCESS_FORMAT]
    server = ServerProcess(args)
    server.log_path = directory / "error.log"
    server.directory = directory
    server.interface = interface
    try:
        server.start(wait_ready=2)
        yield server
    finally:
        server.stop()


def access_fields(server: ServerProcess, marker: str) -> dict[str, str]:
    access = server.directory / "access.log"
    assert wait_until(lambda: marker in access.read_text())
    line = next(line for line in access.read_text().splitlines() if marker in line)
    return dict(zip(ALL_ATOMS, line.split("|"), strict=True))


# -- error log ---------------------------------------------------------------------


def test_banner_names_version_binds_app_interface_dispatch_workers_threads(logged):
    log = logged.log()
    assert re.search(rf"\[INFO\] Starting clusterserve {re.escape(__version__)}$", log, re.M)
    assert re.search(rf"\[INFO\] Listening at: http://127\.0\.0\.1:{logged.port} \(\d+\)$", log, re.M)
    banner = re.search(r"\[INFO\] Dispatch: (\S+), workers: (\d+), (?:threads: (\d+), )?app: (\S+), "
                       r"interface: (\w+)$", log, re.M)
    assert banner is not None, log
    threads = "3" if logged.interface == "wsgi" else None  # ASGI workers have no app threads
    assert banner.groups() == ("shared", "2", threads, INTERFACES[logged.interface], logged.interface)


def test_banner_lists_every_bind(start_server, tmp_path):
    sock = tmp_path / "s.sock"
    server = start_server(["tests.apps.basic:app", "-b", "127.0.0.1:0", "-b", f"unix:{sock}"],
                          workers=1, bind=None)
    listening = re.findall(r"Listening at: (\S+) \(\d+\)$", server.log(), re.M)
    assert listening == [f"http://127.0.0.1:{server.port}", f"unix:{sock}"]
    assert "threads: 1 if WSGI, app: tests.apps.basic:app, interface: auto (each worker detects it)" \
        in server.log()


def test_capture_output_sends_the_apps_print_to_the_error_log(logged):
    assert request(logged, "GET", "/print")[0] == 201
    assert wait_until(lambda: "printed to stdout by the app" in logged.log())
    assert wait_until(lambda: "printed to stderr by the app" in logged.log())


def test_an_app_error_reaches_the_error_log_file(logged):
    assert request(logged, "GET", "/fail")[0] == 500
    assert wait_until(lambda: "RuntimeError: failing on purpose" in logged.log())


# -- access log -----------------------------------------------------------------------


def test_every_gunicorn_atom_is_filled(logged):
    status, _, body = request(logged, "POST", "/some/path?x=1&y=2", body=b"data",
                              headers={**REQUEST_HEADERS, "X-Marker": "every-atom"})
    assert (status, body) == (201, b"hello")
    fields = access_fields(logged, "/some/path")
    pid = int(fields["p"].strip("<>"))
    assert pid in logged.workers()
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["t"])
    duration = float(fields["L"])
    assert 0 <= duration < 5
    micros = int(fields["D"])  # T, M, D and L all say the same whole microseconds
    assert fields["L"] == f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
    assert int(fields["T"]) == micros // 1_000_000 and int(fields["M"]) == micros // 1000
    assert {k: fields[k] for k in ALL_ATOMS if k not in ("t", "T", "M", "D", "L", "p")} == {
        "h": "127.0.0.1", "l": "-", "u": "alice",
        "r": "POST /some/path?x=1&y=2 HTTP/1.1", "m": "POST", "U": "/some/path", "q": "x=1&y=2",
        "H": "HTTP/1.1", "s": "201", "B": "5", "b": "5",
        "f": "http://example.test/from", "a": "logging-test/1.0",
        "{x-request-id}i": 'abc \\"1\\"', "{content-type}i": "text/x-test",
        "{x-out}o": 'out \\"quoted\\"', "{REQUEST_METHOD}e": "POST", "{wsgi.url_scheme}e": "http",
        "{no-such-header}i": "-",
    }


def test_wsgi_and_asgi_write_the_same_fields(tmp_path):
    """One format, one request, both interfaces: the same line but for pid and timings."""
    lines = {}
    for interface, app in INTERFACES.items():
        access = tmp_path / f"{interface}.log"
        with running([app, "--interface", interface, "--lifespan", "on", "--access-logfile",
                      str(access), "--access-logformat", ACCESS_FORMAT], workers=1) as server:
            assert request(server, "GET", "/same%20path/caf%C3%A9?a=%20b",
                           headers=REQUEST_HEADERS)[0] == 201
            assert wait_until(lambda access=access: "/same" in access.read_text())
            fields = dict(zip(ALL_ATOMS, access.read_text().strip().split("|"), strict=True))
        lines[interface] = {k: v for k, v in fields.items() if k not in ("t", "T", "M", "D", "L", "p")}
    assert lines["wsgi"] == lines["asgi"]
    assert lines["wsgi"]["U"] == "/same path/cafÃ©"  # PATH_INFO: the bytes as latin-1, per PEP 3333
    assert lines["wsgi"]["r"] == "GET /same%20path/caf%C3%A9?a=%20b HTTP/1.1"


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_json_access_lines(tmp_path, interface):
    access = tmp_path / "access.jsonl"
    with running([INTERFACES[interface], "--interface", interface, "--lifespan", "on",
                  "--access-logfile", str(access), "--access-log-json"], workers=1) as server:
        request(server, "GET", "/json/caf%C3%A9?k=v", headers=REQUEST_HEADERS)
        request(server, "GET", "/fail")
        assert wait_until(lambda: access.read_text().count("\n") == 2)
        first, second = (json.loads(line) for line in access.read_text().splitlines())
        pids = server.workers()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert 0 <= first.pop("duration_ms") < 5000
    assert first.pop("pid") in pids
    assert first == {"remote_addr": "127.0.0.1", "method": "GET", "path": "/json/café", "query": "k=v",
                     "protocol": "HTTP/1.1", "status": 201, "bytes": 5,
                     "referer": "http://example.test/from", "user_agent": "logging-test/1.0",
                     "user": "alice"}
    assert (second["path"], second["status"], second["user"]) == ("/fail", 500, None)


def test_access_log_json_without_an_access_log_is_refused():
    result = subprocess.run([sys.executable, "-m", "clusterserve", "tests.apps.basic:app",
                             "--access-log-json"], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "clusterserve: error: setting 'access_log_json' from command line: the access log is off; "
        "set accesslog (--access-logfile) too"]


# -- log config --------------------------------------------------------------------------------

INI = """\
[loggers]
keys=root,error,access

[handlers]
keys=errors,accesses

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=

[logger_error]
level=DEBUG
handlers=errors
propagate=0
qualname={error_name}

[logger_access]
level=INFO
handlers=accesses
propagate=0
qualname={access_name}

[handler_errors]
class=FileHandler
formatter=plain
args=({error_path!r}, 'a')

[handler_accesses]
class=FileHandler
formatter=plain
args=({access_path!r}, 'a')

[formatter_plain]
format=INI-CONFIG %(levelname)s %(name)s: %(message)s
"""


@pytest.mark.parametrize("names", [("clusterserve", "clusterserve.access"),
                                   ("gunicorn.error", "gunicorn.access")])
def test_logconfig_file_wins_over_errorlog_and_loglevel(tmp_path, names):
    config = tmp_path / "logging.ini"
    config.write_text(INI.format(error_name=names[0], access_name=names[1],
                                 error_path=str(tmp_path / "ini-error.log"),
                                 access_path=str(tmp_path / "ini-access.log")))
    server = ServerProcess(["tests.apps.basic:app", "--log-config", str(config), "--log-level", "error",
                            "--error-logfile", str(tmp_path / "ignored.log")])
    server.log_path = tmp_path / "ini-error.log"
    try:
        server.start(wait_ready=1)
        server.get("/via-ini")
        access = tmp_path / "ini-access.log"
        assert wait_until(lambda: access.exists() and "/via-ini" in access.read_text())
    finally:
        server.stop()
    # The log config's level (DEBUG) and format win over --log-level error and --error-logfile.
    assert re.search(r"^INI-CONFIG INFO clusterserve: Listening at: http://", server.log(), re.M)
    assert re.search(r'^INI-CONFIG INFO clusterserve.access: 127\.0\.0\.1 - - \[.*\] "GET /via-ini ',
                     access.read_text(), re.M)
    assert "Listening at" not in (tmp_path / "ignored.log").read_text()


def test_logconfig_dict_from_a_python_config_file(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text(
        "logconfig_dict = {\n"
        "    'formatters': {'tagged': {'format': 'DICT-CONFIG [%(levelname)s] %(message)s'}},\n"
        "    'handlers': {'out': {'class': 'logging.StreamHandler', 'formatter': 'tagged',\n"
        "                         'stream': 'ext://sys.stderr'}},\n"
        "    'loggers': {'clusterserve': {'handlers': ['out'], 'level': 'INFO', 'propagate': False},\n"
        "                'clusterserve.access': {'handlers': ['out'], 'level': 'INFO',\n"
        "                                        'propagate': False}},\n"
        "}\n")
    with running(["tests.apps.basic:app", "-c", str(conf)], workers=1) as server:
        server.get("/via-dict")
        server.wait_for_log(r'DICT-CONFIG \[INFO\] 127\.0\.0\.1 - - \[.*\] "GET /via-dict HTTP/1\.1" 200')
        assert re.search(r"^DICT-CONFIG \[INFO\] Dispatch: shared, workers: 1", server.log(), re.M)


def test_logconfig_json_file(tmp_path):
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "formatters": {"tagged": {"format": "JSON-CONFIG %(levelname)s %(message)s"}},
        "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "tagged",
                             "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"handlers": ["out"], "level": "INFO", "propagate": False}},
    }))
    with running(["tests.apps.basic:app", "--log-config-json", str(config)], workers=1) as server:
        assert re.search(r"^JSON-CONFIG INFO Starting clusterserve ", server.log(), re.M)


@pytest.mark.parametrize(("flag", "content", "message"), [
    ("--log-config", "[loggers]\nkeys=root\n", r"setting 'logconfig' from command line: "
                                                r"cannot apply it: KeyError: 'formatters'"),
    ("--log-config-json", "{not json", r"setting 'logconfig_json' from command line: "
                                       r"cannot apply it: JSONDecodeError: "),
    ("--log-config", None, r"setting 'logconfig' from command line \(--log-config\): no such file: "),
])
def test_a_bad_log_config_is_one_line_and_exit_2(tmp_path, flag, content, message):
    path = tmp_path / "bad.conf"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "clusterserve", "tests.apps.basic:app", flag, str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match("clusterserve: error: " + message, lines[0]), result.stderr


# -- why workers stop ----------------------------------------------------------------------------


def exit_reason(server: ServerProcess, pid: int) -> tuple[str, str, str | None]:
    """(how, reason, detail) from the arbiter's line about ``pid``."""
    match = server.wait_for_log(exit_line(str(pid)), timeout=15)
    return match.group(2), match.group(3), match.group(4)


def test_a_killed_worker_is_logged_with_the_signal(start_server):
    server = start_server(["tests.apps.basic:app"], workers=1)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    assert exit_reason(server, victim) == ("was killed by SIGKILL", "crash", "SIGKILL")
    assert re.search(rf"\(pid {victim}\) .*reason: crash \(SIGKILL\); starting a replacement$",
                     server.log(), re.M)


def test_max_requests_is_the_reason(start_server):
    server = start_server(["tests.apps.basic:app", "--max-requests", "2"], workers=1)
    first = server.workers()[0]
    for _ in range(2):
        server.get("/")
    assert exit_reason(server, first) == ("exited with code 0", "max_requests", "served 2 requests")


def test_a_heartbeat_timeout_is_the_reason(start_server):
    server = start_server(["tests.apps.basic:app", "--timeout", "1"], workers=1)
    frozen = server.workers()[0]
    os.kill(frozen, signal.SIGSTOP)
    assert exit_reason(server, frozen) == ("was killed by SIGKILL", "timeout", "no heartbeat for 1s")


def test_ttou_hup_and_stop_are_reasons(start_server):
    server = start_server(["tests.apps.basic:app", "-w", "2"], workers=2)
    oldest, younger = sorted(server.workers())
    server.send(signal.SIGTTOU)
    assert exit_reason(server, oldest) == ("exited with code 0", "scale_down", "fewer workers (SIGTTOU)")
    server.send(signal.SIGHUP)
    assert exit_reason(server, younger) == ("exited with code 0", "reload", "generation 2 is ready")
    # The count TTOU set is kept by the HUP (-w did not change): generation 2 has one worker.
    assert wait_until(lambda: len(server.workers()) == 1 and younger not in server.workers())
    generation_2 = server.workers()
    assert server.stop() == 0
    for pid in generation_2:
        assert exit_reason(server, pid) == ("exited with code 0", "stop", "graceful stop")


def test_a_boot_error_is_the_reason():
    server = ServerProcess(["tests.apps.broken_import:app"])
    try:
        server.start()
        assert server.wait(timeout=20) == 3
    finally:
        server.kill_all()
    match = exit_line().search(server.log())
    assert match is not None, server.log()
    assert match.group(2, 3, 4) == ("exited with code 3", "boot_error",
                                    "RuntimeError: this module is broken on purpose")


# -- USR1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_usr1_reopens_the_error_log_the_access_log_and_captured_output(tmp_path, interface):
    error, access = tmp_path / "error.log", tmp_path / "access.log"
    server = ServerProcess([INTERFACES[interface], "-w", "2", "--interface", interface,
                            "--lifespan", "on", "--capture-output", "--error-logfile", str(error),
                            "--access-logfile", str(access)])
    server.log_path = error
    try:
        server.start(wait_ready=2)
        request(server, "GET", "/before")
        assert wait_until(lambda: "/before" in access.read_text())
        error.rename(tmp_path / "error.log.1")  # what logrotate does
        access.rename(tmp_path / "access.log.1")
        server.send(signal.SIGUSR1)
        server.wait_for_log("SIGUSR1: log files reopened")  # the arbiter, in the new file
        time.sleep(0.5)  # the arbiter forwards the signal to the workers
        for _ in range(4):  # whichever worker answers writes to the new files
            assert request(server, "GET", "/fail")[0] == 500
            assert request(server, "GET", "/print")[0] == 201
        assert wait_until(lambda: access.exists() and access.read_text().count("/fail") == 4)
        assert wait_until(lambda: server.log().count("RuntimeError: failing on purpose") >= 4)
        assert wait_until(lambda: server.log().count("printed to stdout by the app") == 4)
    finally:
        server.stop()
    old_error = (tmp_path / "error.log.1").read_text()
    old_access = (tmp_path / "access.log.1").read_text()
    assert "Listening at" in old_error and "/before" in old_access
    assert "failing on purpose" not in old_error and "printed to stdout" not in old_error
    assert "/fail" not in old_access



@pytest.mark.parametrize("fmt", ["%(h", "%(s)q"])
def test_an_access_log_format_no_request_could_fill_is_refused(fmt):
    result = subprocess.run([sys.executable, "-m", "clusterserve", "tests.apps.basic:app",
                             "--access-logformat", fmt], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "clusterserve: error: setting 'access_log_format' from command line (--access-logformat): "
        "not a valid %-format: "), result.stderr


def test_a_handler_added_from_a_hook_gets_the_access_lines_too(tmp_path):
    access, hooked = tmp_path / "access.log", tmp_path / "hooked.log"
    conf = tmp_path / "conf.py"
    conf.write_text(
        "import logging\n\n"
        "def post_fork(server, worker):\n"
        f"    handler = logging.FileHandler({str(hooked)!r})\n"
        "    handler.setFormatter(logging.Formatter('HOOKED %(message)s'))\n"
        "    logging.getLogger('clusterserve.access').addHandler(handler)\n")
    with running(["tests.apps.basic:app", "-c", str(conf), "--access-logfile", str(access)],
                 workers=1) as server:
        server.get("/seen-twice")
        assert wait_until(lambda: "/seen-twice" in access.read_text())
        assert wait_until(lambda: hooked.exists() and "/seen-twice" in hooked.read_text())
    assert hooked.read_text().startswith('HOOKED 127.0.0.1 - - [')


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_an_access_line_reaches_the_file_soon_after_the_response(tmp_path, interface):
    """Lines are flushed by the worker's loop, within 0.1 s, not one write per request."""
    access = tmp_path / "access.log"
    with running([INTERFACES[interface], "--interface", interface, "--lifespan", "on",
                  "--access-logfile", str(access)], workers=1) as server:
        for attempt in range(3):
            request(server, "GET", f"/soon-{attempt}")
            answered = time.monotonic()
            assert wait_until(lambda attempt=attempt: f"/soon-{attempt}" in access.read_text(),
                              timeout=5, interval=0.01)
            assert time.monotonic() - answered < 0.6
            time.sleep(0.3)  # the next one arrives at an idle worker


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_the_exit_line_counts_requests_served_just_before_the_stop(start_server, interface):
    """Counted when the worker leaves, not at its last heartbeat or tick: a TERM right
    after the requests must not lose them from the arbiter's line."""
    server = start_server([INTERFACES[interface], "-w", "1", "--interface", interface], workers=1)
    conn = server.http()
    for _ in range(5):
        conn.request("GET", "/")
        conn.getresponse().read()
    conn.close()
    assert server.stop(timeout=20) == 0
    assert re.search(r"exited with code 0 after 1 connections and 5 requests; reason: stop", server.log()), \
        server.log()
