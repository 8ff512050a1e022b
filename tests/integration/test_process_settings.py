"""Process-level settings seen from outside: pidfile, env, chdir, user, group, titles, spread."""

import os
import pwd
import threading
import time

import pytest

from tests.harness import ROOT


def proc_status(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return line.split()[1]
    raise KeyError(field)


def test_pidfile_is_written_and_removed(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server(["tests.apps.basic:app", "-w", "1", "-p", str(pidfile)], workers=1)
    assert pidfile.read_text().strip() == str(server.pid)
    assert server.stop() == 0
    assert not pidfile.exists()


def test_raw_env_reaches_the_app(start_server):
    server = start_server(["tests.apps.basic:env", "-w", "1", "-e", "GREETING=hello there",
                           "--env", "OTHER=x=y"], workers=1)
    assert server.get("/GREETING")[2] == b"hello there"
    assert server.get("/OTHER")[2] == b"x=y"


def test_chdir_makes_the_app_importable(start_server):
    server = start_server(["basic:app", "-w", "1", "--chdir", str(ROOT / "tests" / "apps")], workers=1)
    assert server.get("/")[2].startswith(b"hello from")


def test_pythonpath_makes_the_app_importable(start_server):
    server = start_server(["basic:app", "-w", "1", "--pythonpath", str(ROOT / "tests" / "apps")],
                          workers=1)
    assert server.get("/")[2].startswith(b"hello from")


def test_factory_with_arguments(start_server):
    server = start_server(["tests.apps.basic:create_app('hey', punctuation='?')", "-w", "1"], workers=1)
    assert server.get("/")[2] == b"hey?"


def test_module_alone_finds_application(start_server):
    server = start_server(["tests.apps.basic", "-w", "1"], workers=1)
    assert server.get("/")[2].startswith(b"hello from")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workers_run_as_user_and_group(start_server):
    nobody = pwd.getpwnam("nobody")
    server = start_server(["tests.apps.basic:app", "-w", "2", "-u", "nobody", "-g", str(nobody.pw_gid)],
                          workers=2)
    assert proc_status(server.pid, "Uid") == "0"
    for pid in server.workers():
        assert proc_status(pid, "Uid") == str(nobody.pw_uid)
        assert proc_status(pid, "Gid") == str(nobody.pw_gid)
    assert server.get("/")[0] == 200


def test_process_titles_name_arbiter_and_workers(start_server):
    pytest.importorskip("setproctitle")
    server = start_server(["tests.apps.basic:app", "-w", "2", "-n", "shop"], workers=2)
    assert open(f"/proc/{server.pid}/cmdline").read().startswith("shop: arbiter [tests.apps.basic:app]")
    titles = sorted(open(f"/proc/{pid}/cmdline").read().split("\0")[0] for pid in server.workers())
    assert titles == ["shop: worker 1 [tests.apps.basic:app]", "shop: worker 2 [tests.apps.basic:app]"]


def test_port_and_web_concurrency_from_the_environment(start_server):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(["tests.apps.basic:app"], bind=None,
                          env={"PORT": str(port), "WEB_CONCURRENCY": "3"}, workers=3)
    assert f"Listening at: http://0.0.0.0:{port} " in server.log()
    assert len(server.workers()) == 3


def test_a_busy_worker_leaves_new_connections_to_the_others(start_server):
    """With one app thread each, two slow requests at once run on two workers in parallel."""
    server = start_server(["tests.apps.basic:slow", "-w", "2", "--threads", "1"], workers=2)
    results = []

    def fetch():
        started = time.monotonic()
        status, _, _ = server.get("/?seconds=1")
        results.append((status, time.monotonic() - started))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=10)
    assert [status for status, _ in results] == [200, 200]
    assert time.monotonic() - started < 1.9, results
