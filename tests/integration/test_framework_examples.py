"""The framework examples in examples/, each served by clusterserve and answering real requests.

Flask, Django (WSGI and ASGI entry points) and FastAPI (lifespan, WebSocket),
and the two config-file examples (a pyproject.toml [tool.clusterserve] table,
a gunicorn.conf.py with hooks). Each framework comes from the ``test``
extra; where one is not installed its tests are skipped, with the reason.
(examples/hello.py, hello_asgi.py and starlette_app.py are served by
test_examples.py.)
"""

import json
import signal
import subprocess
import sys

import pytest

from tests import harness
from tests.harness import ROOT, request

# Generous: the machine may be loaded, and Django or FastAPI take a while to import.
START = 60.0
# Above pytest-timeout's 60 s of pyproject.toml: servers start and stop here, on a loaded machine.
pytestmark = pytest.mark.timeout(300)


def running(args, *, workers, **kwargs):
    """tests.harness.running, with longer waits for the first workers and the stop."""
    return harness.running(args, workers=workers, start_timeout=START, stop_timeout=30, **kwargs)


def _json(response):
    status, headers, body = response
    assert status == 200, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    return json.loads(body)


# -- Flask -------------------------------------------------------------------


def test_flask_app_serves_get_post_and_health():
    pytest.importorskip("flask", reason="flask is not installed (it comes with the test extra)")
    with running(["examples.flask_app:app", "-w", "2", "--threads", "2"], workers=2) as server:
        data = _json(server.get("/"))
        assert data["message"] == "Hello from Flask!"
        assert data["worker"] in server.workers()
        echoed = _json(request(server, "POST", "/echo", body=b"some body",
                               headers={"Content-Type": "text/plain"}))
        assert echoed == {"received": "some body", "scheme": "http"}
        # From a trusted proxy (127.0.0.1 is in forwarded_allow_ips by default)
        # the scheme of X-Forwarded-Proto reaches Flask.
        proxied = _json(request(server, "POST", "/echo", body=b"x",
                                headers={"X-Forwarded-Proto": "https"}))
        assert proxied["scheme"] == "https"
        status, _, body = server.get("/healthz")
        assert (status, body) == (200, b"ok\n")
        assert "serving WSGI" in server.log()


# -- Django ------------------------------------------------------------------


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_django_project_serves_over_wsgi_and_asgi(interface):
    pytest.importorskip("django", reason="django is not installed (it comes with the test extra)")
    entry = f"examples.django_project.{interface}:application"
    with running([entry, "-w", "2"], workers=2) as server:
        data = _json(server.get("/"))
        assert data["message"] == "Hello from Django!"
        assert data["interface"] == interface
        assert data["secure"] is False
        assert data["worker"] in server.workers()
        assert _json(server.get("/slow?seconds=0.05")) == {"slept": True}
        # The project's settings are in force: a Host outside ALLOWED_HOSTS is refused.
        status, _, _ = server.get("/", headers={"Host": "evil.example"})
        assert status == 400
        assert f"serving {interface.upper()}" in server.log()
        assert server.stop(timeout=30) == 0
        assert "Traceback" not in server.log()


# -- FastAPI -----------------------------------------------------------------


def test_fastapi_app_lifespan_http_and_websocket():
    pytest.importorskip("fastapi", reason="fastapi is not installed (it comes with the test extra)")
    pytest.importorskip("websockets", reason="websockets is not installed (clusterserve[standard])")
    from websockets.sync.client import connect

    with running(["examples.fastapi_app:app", "-w", "2"], workers=2) as server:
        data = _json(server.get("/"))
        # Set by the lifespan startup, in the worker that answered.
        assert data["message"] == "Hello from FastAPI"
        assert data["worker"] in server.workers()
        assert _json(server.get("/healthz")) == {"status": "ok"}
        with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=10, close_timeout=5) as ws:
            for text in ("hello", "again"):
                ws.send(text)
                assert ws.recv(timeout=10) == f"echo: {text}"
        assert "serving ASGI" in server.log()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
        log = server.log()
    assert log.count("Application startup complete.") == 2
    assert log.count("Application shutdown complete.") == 2


# -- Config-file examples -------------------------------------------------------


def test_pyproject_tool_table_configures_the_server():
    # No APP and no -c: the [tool.clusterserve] table of ./pyproject.toml sets both.
    with running([], cwd=ROOT / "examples" / "pyproject_example", workers=2) as server:
        status, _, body = server.get("/")
        assert (status, body) == (200, b"Hello, world!\n")
        log = server.log()
        assert "Dispatch: shared, workers: 2, threads: 4 if WSGI, app: examples.hello:app" in log
        assert '"GET / HTTP/1.1" 200 14' in server.wait_for_log(r'"GET / HTTP/1\.1" 200 \d+').group(0)


def test_pyproject_example_passes_check_config():
    result = subprocess.run([sys.executable, "-m", "clusterserve", "--check-config"],
                            cwd=ROOT / "examples" / "pyproject_example", capture_output=True,
                            text=True, timeout=START)
    assert result.returncode == 0, result.stderr
    assert "workers = 2  # config file" in result.stdout
    assert "loads and is served as WSGI" in result.stdout


def test_gunicorn_conf_py_settings_and_hooks():
    args = ["-c", "examples/gunicorn.conf.py", "examples.hello:app", "--log-level", "debug"]
    with running(args, workers=2, env={"WEB_CONCURRENCY": "2"}) as server:
        status, _, body = server.get("/")
        assert (status, body) == (200, b"Hello, world!\n")
        server.wait_for_log(r"hook post_request: GET / -> 200 OK")
        log = server.log()
        assert "Dispatch: shared, workers: 2, threads: 4 if WSGI" in log
        assert f"hook on_starting: arbiter {server.pid}" in log
        assert "hook when_ready: serving" in log
        for pid in server.workers():
            assert f"hook post_fork: worker {pid}" in log
        assert server.stop(timeout=30) == 0
        log = server.log()
    assert log.count("hook worker_exit: worker") == 2
    assert log.rstrip().endswith("Shutting down: exit code 0")
    assert "hook on_exit: goodbye" in log
    assert "hook failed" not in log
