"""Start-up: apps that cannot load, addresses that cannot be bound, preload, hooks."""

import socket
import subprocess
import sys
import time

from tests.harness import ROOT, wait_until


def run_to_exit(args, timeout=20, **kwargs):
    """Run clusterserve expecting it to exit by itself; return (code, output, seconds)."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "clusterserve", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout, **kwargs)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def test_app_that_fails_to_import_stops_the_server_without_a_fork_loop():
    code, output, seconds = run_to_exit(["tests.apps.broken_import:app", "-w", "3", "-b", "127.0.0.1:0"])
    assert code == 3
    assert "this module is broken on purpose" in output
    assert "tests.apps.broken_import:app" in output
    assert output.count("Booting worker") <= 3
    assert seconds < 10


def test_missing_attribute_names_the_app():
    code, output, _ = run_to_exit(["tests.apps.basic:nope", "-w", "2", "-b", "127.0.0.1:0"])
    assert code == 3
    assert "tests.apps.basic:nope" in output and "'nope'" in output


def test_missing_module_names_the_app():
    code, output, _ = run_to_exit(["tests.apps.no_such_module:app", "-b", "127.0.0.1:0"])
    assert code == 3
    assert "no such module" in output and "tests.apps.no_such_module" in output


def test_failing_asgi_lifespan_startup_stops_the_server_without_a_fork_loop():
    code, output, seconds = run_to_exit(["tests.apps.asgi_apps:failing_startup", "-w", "2",
                                         "-b", "127.0.0.1:0"])
    assert code == 3
    assert "startup failed on purpose" in output
    assert "the app's lifespan startup failed" in output
    assert output.count("Booting worker") <= 2
    assert seconds < 10


def test_preload_failure_stops_before_forking():
    code, output, _ = run_to_exit(["tests.apps.broken_import:app", "--preload", "-b", "127.0.0.1:0"])
    assert code == 3
    assert "this module is broken on purpose" in output
    assert "Booting worker" not in output


def test_port_in_use_is_one_line_and_nothing_forks():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output, _ = run_to_exit(["tests.apps.basic:app", "-b", f"127.0.0.1:{port}"])
    assert code == 1
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert errors == [errors[0]] and f"cannot bind 127.0.0.1:{port}: address already in use" in errors[0]
    assert "Booting worker" not in output


def test_unresolvable_host_is_an_error():
    code, output, _ = run_to_exit(["tests.apps.basic:app", "-b", "no-such-host.invalid:8000"])
    assert code == 1
    assert "cannot bind no-such-host.invalid:8000" in output


def test_unix_socket_in_missing_directory_is_an_error(tmp_path):
    path = tmp_path / "missing" / "s.sock"
    code, output, _ = run_to_exit(["tests.apps.basic:app", "-b", f"unix:{path}"])
    assert code == 1
    assert f"cannot bind unix:{path}" in output


def test_preload_imports_the_app_once_in_the_arbiter(start_server, tmp_path):
    marker = tmp_path / "imports"
    server = start_server(["tests.apps.preload_marker:app", "--preload", "-w", "2"], workers=2,
                          env={"IMPORT_MARKER": str(marker)})
    assert marker.read_text().split() == [str(server.pid)]
    assert server.get("/")[0] == 200


def test_hooks_from_a_python_config_file(start_server, tmp_path):
    record = tmp_path / "hooks"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "import os\n"
        f"RECORD = {str(record)!r}\n"
        "def _note(name, pid):\n"
        "    with open(RECORD, 'a') as f:\n"
        "        f.write(f'{name} {pid}\\n')\n"
        "def on_starting(server): _note('on_starting', server.pid)\n"
        "def when_ready(server): _note('when_ready', server.pid)\n"
        "def pre_fork(server, worker): _note('pre_fork', server.pid)\n"
        "def post_fork(server, worker): _note('post_fork', worker.pid)\n"
        "def post_worker_init(worker): _note('post_worker_init', worker.pid)\n"
        "def pre_request(worker, req): _note('pre_request', worker.pid)\n"
        "def post_request(worker, req, environ, resp): _note('post_request', worker.pid)\n"
        "def worker_exit(server, worker): _note('worker_exit', worker.pid)\n"
        "def child_exit(server, worker): _note('child_exit', worker.pid)\n"
        "def on_exit(server): _note('on_exit', server.pid)\n"
        "workers = 2\n"
    )
    server = start_server(["tests.apps.basic:app", "-c", str(config)], workers=2)
    assert server.get("/")[0] == 200
    assert server.stop() == 0
    lines = [line.split() for line in record.read_text().splitlines()]
    names = [name for name, _ in lines]
    arbiter, workers = str(server.pid), {pid for name, pid in lines if name == "post_fork"}
    assert len(workers) == 2 and arbiter not in workers
    for name in ("on_starting", "when_ready", "on_exit"):
        assert [name, arbiter] in lines
    assert names.count("pre_fork") == 2 and names.count("post_worker_init") == 2
    assert names.count("worker_exit") == 2 and names.count("child_exit") == 2
    assert names.count("pre_request") == 1 and names.count("post_request") == 1
    assert names[0] == "on_starting" and names[-1] == "on_exit"


def test_zero_workers_is_a_usage_error():
    code, output, _ = run_to_exit(["tests.apps.basic:app", "--workers", "0"])
    assert code == 2
    assert output.strip().splitlines() == [
        "clusterserve: error: setting 'workers' from command line (-w/--workers): must be at least 1, got 0"
    ]


def test_pidfile_that_cannot_be_written_is_one_error_line(tmp_path):
    code, output, _ = run_to_exit(["tests.apps.basic:app", "-b", "127.0.0.1:0",
                                   "-p", str(tmp_path / "missing" / "x.pid")])
    assert code == 1
    assert "Traceback" not in output
    assert f"cannot write pidfile {tmp_path}/missing/x.pid: No such file or directory" in output
    assert "Booting worker" not in output


def test_a_url_as_bind_is_a_usage_error():
    code, output, _ = run_to_exit(["tests.apps.basic:app", "-b", "http://127.0.0.1:8000"])
    assert code == 2
    assert "not a URL: 'http://127.0.0.1:8000'" in output


def test_request_hooks_get_gunicorns_request_attributes(start_server, tmp_path):
    record = tmp_path / "requests"
    config = tmp_path / "hooks.py"
    config.write_text(
        f"RECORD = {str(record)!r}\n"
        "def pre_request(worker, req):\n"
        "    worker.log.debug('%s %s', req.method, req.path)  # gunicorn's own example\n"
        "    with open(RECORD, 'a') as f:\n"
        "        f.write(f'pre {req.method} {req.path} {req.query} {req.uri} {req.version}\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        "    with open(RECORD, 'a') as f:\n"
        "        f.write(f'post {resp.status_code} {dict(req.headers)[\"X-TRACE\"]}\\n')\n"
    )
    server = start_server(["tests.apps.basic:app", "-w", "1", "-c", str(config)], workers=1)
    assert server.get("/some/path?a=1", headers={"X-Trace": "t1"})[0] == 200
    assert wait_until(lambda: record.read_text().count("\n") == 2)  # post_request runs after the reply
    assert record.read_text().splitlines() == [
        "pre GET /some/path a=1 /some/path?a=1 (1, 1)",
        "post 200 t1",
    ]
    assert "hook failed" not in server.log()
