"""Real gunicorn.conf.py files, in the shapes Django, Flask and FastAPI deployments use,
run unchanged: each directory holds only the config and the app, and

- the effective settings ``clusterserve --check-config`` prints are the ones
  ``gunicorn --print-config`` prints (gunicorn 27.0, from the test extra);
- the server started from that directory serves the app;
- a setting clusterserve refuses is named here, the start with it fails with
  exit code 2 naming it, and the config runs once that line is removed.
"""

from __future__ import annotations

import ast
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from clusterserve.config import gunicorn as registry
from clusterserve.config.settings import BY_NAME, HOOK
from tests.harness import is_alive, kill_tree, running, wait_until

BIN = Path(sys.executable).parent
START = 30.0

FLASK_APP = """
    from flask import Flask

    app = Flask(__name__)


    @app.get("/")
    def index():
        return "flask says hello"
"""

FASTAPI_APP = """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI


    @asynccontextmanager
    async def lifespan(app):
        yield


    app = FastAPI(lifespan=lifespan)


    @app.get("/")
    async def index():
        return {"fastapi": "says hello"}
"""


@dataclass
class Case:
    name: str
    framework: str  # django, flask or fastapi
    conf: str
    app: str | None  # the APP argument; None when the config sets wsgi_app
    body: bytes  # in the response to GET /
    refused: tuple[str, ...] = ()  # settings clusterserve refuses (exit 2), named
    env: dict[str, str] | None = None
    tls: bool = False
    daemon: bool = False


CASES = [
    Case("django-cpu-count", "django", """
        import multiprocessing

        wsgi_app = "mysite.wsgi:application"
        bind = "0.0.0.0:8000"
        workers = multiprocessing.cpu_count() * 2 + 1
        timeout = 120
        max_requests = 1000
        max_requests_jitter = 50
        accesslog = "-"
        errorlog = "-"
        loglevel = "info"
        capture_output = True
        pidfile = "gunicorn.pid"
    """, None, b"Django"),
    Case("django-environment", "django", """
        import os

        bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
        workers = int(os.environ.get("WEB_CONCURRENCY", 3))
        worker_class = "gthread"
        threads = 4
        forwarded_allow_ips = "*"
        secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
        limit_request_line = 8190
        limit_request_field_size = 16380
        raw_env = ["DJANGO_SETTINGS_MODULE=mysite.settings"]
        preload_app = True
        worker_tmp_dir = "/dev/shm"
    """, "mysite.wsgi", b"Django", env={"WEB_CONCURRENCY": "2"}),
    Case("django-hooks-and-logconfig", "django", """
        import logging

        bind = ["127.0.0.1:8000", "unix:gunicorn.sock"]
        workers = 2
        umask = 0o007
        keepalive = 10
        graceful_timeout = 20
        logconfig_dict = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "loggers": {
                "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
                "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
            },
        }

        def on_starting(server):
            logging.getLogger("gunicorn.error").info("starting the django site")

        def post_fork(server, worker):
            server.log.info("worker %s forked", worker.pid)

        def worker_exit(server, worker):
            server.log.info("worker %s exits", worker.pid)
    """, "mysite.wsgi:application", b"Django"),
    Case("flask-gevent", "flask", """
        bind = "0.0.0.0:5000"
        workers = 2
        worker_class = "gevent"
        worker_connections = 1000
        timeout = 60
        accesslog = "-"
        access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(D)s'
    """, "app:app", b"flask says hello", refused=("worker_class",)),
    Case("flask-request-hooks", "flask", """
        import random

        bind = [":5000"]
        workers = 2
        keepalive = 5
        loglevel = "debug"
        proc_name = "flask-app"
        reload_extra_files = ["templates/index.html"]

        def post_fork(server, worker):
            random.seed()

        def when_ready(server):
            server.log.info("server is ready, spawning workers")

        def pre_request(worker, req):
            worker.log.debug("%s %s", req.method, req.path)

        def post_request(worker, req, environ, resp):
            worker.log.debug("%s -> %s", req.path, resp.status)
    """, "app:app", b"flask says hello"),
    Case("flask-syslog-and-sendfile", "flask", """
        import multiprocessing

        bind = "0.0.0.0:5000"
        workers = max(2, multiprocessing.cpu_count() // 2)
        syslog = True
        syslog_addr = "udp://localhost:514"
        sendfile = False
        statsd_host = "localhost:8125"
        statsd_prefix = "flask_app"
    """, "app:app", b"flask says hello", refused=("syslog", "sendfile")),
    Case("fastapi-uvicorn-worker", "fastapi", """
        bind = "0.0.0.0:8000"
        workers = 2
        worker_class = "uvicorn.workers.UvicornWorker"
        timeout = 120
        graceful_timeout = 30
        keepalive = 5
        accesslog = "-"
        errorlog = "-"
    """, "main:app", b'{"fastapi":"says hello"}'),
    Case("fastapi-docker-image", "fastapi", """
        import json
        import multiprocessing
        import os

        workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
        max_workers_str = os.getenv("MAX_WORKERS")
        use_max_workers = None
        if max_workers_str:
            use_max_workers = int(max_workers_str)
        web_concurrency_str = os.getenv("WEB_CONCURRENCY", None)

        host = os.getenv("HOST", "0.0.0.0")
        port = os.getenv("PORT", "80")
        bind_env = os.getenv("BIND", None)
        use_loglevel = os.getenv("LOG_LEVEL", "info")
        if bind_env:
            use_bind = bind_env
        else:
            use_bind = f"{host}:{port}"

        cores = multiprocessing.cpu_count()
        workers_per_core = float(workers_per_core_str)
        default_web_concurrency = workers_per_core * cores
        if web_concurrency_str:
            web_concurrency = int(web_concurrency_str)
            assert web_concurrency > 0
        else:
            web_concurrency = max(int(default_web_concurrency), 2)
            if use_max_workers:
                web_concurrency = min(web_concurrency, use_max_workers)
        accesslog_var = os.getenv("ACCESS_LOG", "-")
        use_accesslog = accesslog_var or None
        errorlog_var = os.getenv("ERROR_LOG", "-")
        use_errorlog = errorlog_var or None
        graceful_timeout_str = os.getenv("GRACEFUL_TIMEOUT", "120")
        timeout_str = os.getenv("TIMEOUT", "120")
        keepalive_str = os.getenv("KEEP_ALIVE", "5")

        loglevel = use_loglevel
        workers = web_concurrency
        bind = use_bind
        errorlog = use_errorlog
        worker_tmp_dir = "/dev/shm"
        accesslog = use_accesslog
        graceful_timeout = int(graceful_timeout_str)
        timeout = int(timeout_str)
        keepalive = int(keepalive_str)

        log_data = {"loglevel": loglevel, "workers": workers, "bind": bind}
        print(json.dumps(log_data))
    """, "main:app", b'{"fastapi":"says hello"}', env={"MAX_WORKERS": "2", "PORT": "8080"}),
    Case("fastapi-settings-module", "fastapi", """
        import os

        from settings import Settings

        settings = Settings()
        bind_host = os.getenv("BIND_HOST", "0.0.0.0")
        bind = f"{bind_host}:{settings.port}"
        workers = settings.workers
        worker_class = "uvicorn_worker.UvicornWorker"
        timeout = settings.timeout
        forwarded_allow_ips = os.getenv("FORWARDED_ALLOW_IPS", "127.0.0.1,10.0.0.0/8")
        max_requests = 500
        max_requests_jitter = 25
    """, "main:app", b'{"fastapi":"says hello"}'),
    Case("flask-daemon", "flask", """
        import multiprocessing

        bind = "127.0.0.1:5000"
        workers = 2
        daemon = True
        pidfile = "gunicorn_pid"
        accesslog = "gunicorn_access.log"
        errorlog = "gunicorn_error.log"
    """, "app:app", b"flask says hello", daemon=True),
    Case("flask-tls", "flask", """
        bind = "0.0.0.0:8443"
        workers = 2
        certfile = "server.crt"
        keyfile = "server.key"
        ca_certs = "ca.crt"
        cert_reqs = 0
        ciphers = "ECDHE+AESGCM"
        do_handshake_on_connect = True
    """, "app:app", b"flask says hello", tls=True),
    Case("django-asgi-uvicorn", "django", """
        import os

        bind = "unix:/run/mysite/gunicorn.sock" if os.path.isdir("/run/mysite") else "0.0.0.0:8000"
        workers = 2
        worker_class = "uvicorn.workers.UvicornWorker"
        max_requests = 1200
        control_socket_disable = True
        header_map = "refuse"
    """, "mysite.asgi:application", b"Django"),
]


def make_project(directory: Path, case: Case) -> None:
    """The app and the config, and nothing else, as a deployment's directory."""
    if case.framework == "django":
        subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", str(directory)],
                       check=True, timeout=START)
    elif case.framework == "flask":
        (directory / "app.py").write_text(textwrap.dedent(FLASK_APP))
        (directory / "templates").mkdir()
        (directory / "templates" / "index.html").write_text("<p>hello</p>\n")
    else:
        (directory / "main.py").write_text(textwrap.dedent(FASTAPI_APP))
        (directory / "settings.py").write_text(textwrap.dedent("""
            class Settings:
                port = 8000
                workers = 2
                timeout = 90
        """))
    if case.tls:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(directory / "ca.crt"))
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
        cert.private_key_pem.write_to_path(str(directory / "server.key"))
    (directory / "gunicorn.conf.py").write_text(textwrap.dedent(case.conf))


def without(conf: str, names: tuple[str, ...]) -> str:
    """The config with the lines that set ``names`` removed."""
    pattern = re.compile(rf"^\s*({'|'.join(names)})\s*=")
    return "\n".join(line for line in textwrap.dedent(conf).splitlines() if not pattern.match(line))


def environment(case: Case) -> dict[str, str]:
    outside = ("GUNICORN_CMD_ARGS", "CLUSTERSERVE_CMD_ARGS", "WEB_CONCURRENCY", "PORT",
               "FORWARDED_ALLOW_IPS", "NOTIFY_SOCKET")
    env = {k: v for k, v in os.environ.items() if k not in outside}
    return {**env, **(case.env or {})}


def command(tool: str, case: Case, *args: str) -> list[str]:
    return [str(BIN / tool), *args, *([case.app] if case.app else [])]


def print_config(tool: str, case: Case, cwd: Path) -> subprocess.CompletedProcess[str]:
    flag = "--print-config" if tool == "gunicorn" else "--check-config"
    return subprocess.run(command(tool, case, flag), cwd=cwd, env=environment(case),
                          capture_output=True, text=True, timeout=START)


def gunicorns_settings(output: str) -> dict[str, str]:
    settings = {}
    for line in output.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and re.fullmatch(r"[a-z0-9_]+", name.strip()):
            settings[name.strip()] = value.strip()
    return settings


def clusterserves_settings(output: str) -> dict[str, str]:
    settings = {}
    for line in output.splitlines():
        match = re.match(r"^([a-z0-9_]+) = (.*)  # .*$", line)
        if match:
            settings[match.group(1)] = match.group(2)
    return settings


def literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# Settings whose value is shown differently, or means the same thing differently:
# compared through these, from gunicorn's shown value and ours.
def _same_path(theirs: str, ours: object, cwd: Path) -> bool:
    return Path(theirs).resolve() == Path(str(ours) if ours is not None else cwd).resolve()


def _same_address(theirs: str, ours: object) -> bool:
    """gunicorn shows statsd_host as a (host, port) tuple, clusterserve as HOST:PORT."""
    if ours is None:
        return theirs == "None"
    host, _, port = str(ours).rpartition(":")
    return literal(theirs) == (host, int(port))


SAME = {
    "chdir": lambda theirs, ours, cwd: _same_path(theirs, ours, cwd),  # None: stay where started
    "user": lambda theirs, ours, cwd: int(theirs) == (os.getuid() if ours is None else ours),
    "group": lambda theirs, ours, cwd: int(theirs) == (os.getgid() if ours is None else ours),
    "pythonpath": lambda theirs, ours, cwd: (theirs.split(",") if theirs != "None" else []) == ours,
    "ssl_version": lambda theirs, ours, cwd: BY_NAME["ssl_version"].parse(literal(theirs)) == ours,
    "statsd_host": lambda theirs, ours, cwd: _same_address(theirs, ours),
    "http": lambda theirs, ours, cwd: {"python": "h11", "fast": "httptools"}.get(theirs, theirs) == ours,
    "proxy_protocol": lambda theirs, ours, cwd: BY_NAME["proxy_protocol"].parse(literal(theirs)) == ours,
}
# Not compared, and why.
NOT_COMPARED = {
    "config": "the file's name as each tool shows it (./gunicorn.conf.py, gunicorn.conf.py)",
    "check_config": "each tool's own flag: gunicorn's --print-config sets print_config instead",
    "wsgi_app": "gunicorn shows only the file's; ours includes the APP argument (compared below)",
    "control_socket": "off unless set here (gunicorn 25.1 turns it on; docs/migrating.md)",
}


def compare(case: Case, theirs: dict[str, str], ours: dict[str, str], cwd: Path) -> list[str]:
    """Differences between the effective settings, one line each."""
    differences = []
    for name in registry.GUNICORN_NAMES:
        target = registry.ALIASES.get(name, name)
        if name in registry.FOREIGN_BY_NAME or target in NOT_COMPARED or name == "print_config":
            continue
        setting = BY_NAME[target]
        mine = ours.get(target)
        if setting.kind == HOOK:
            set_by_user = not re.fullmatch(r"<[A-Z]\w*\.\w+\(\)>", theirs[name])
            if set_by_user != (mine is not None):
                differences.append(f"{name}: gunicorn {theirs[name]}, clusterserve {mine}")
            continue
        value = literal(mine) if mine is not None else None
        same = SAME.get(target, lambda t, o, c: literal(t) == o)
        if not same(theirs[name], value, cwd):
            differences.append(f"{name}: gunicorn {theirs[name]}, clusterserve {mine}")
    if theirs.get("wsgi_app") not in (None, "None") and literal(ours["wsgi_app"]) != theirs["wsgi_app"]:
        differences.append(f"wsgi_app: gunicorn {theirs['wsgi_app']}, clusterserve {ours['wsgi_app']}")
    return differences


def get(host: str, port: int, tls: bool = False) -> tuple[int, bytes]:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=15, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=15)
    try:
        connection.request("GET", "/", headers={"Host": "localhost"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_there_are_ten_or_more_real_shapes_from_each_framework():
    assert len(CASES) >= 10
    assert {case.framework for case in CASES} == {"django", "flask", "fastapi"}
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_gunicorn_conf_py_runs_unchanged(case, tmp_path):
    make_project(tmp_path, case)
    if case.refused:
        refused = print_config("clusterserve", case, tmp_path)
        assert refused.returncode == 2, refused.stderr
        named = re.findall(r"setting '(\w+)' from config file gunicorn\.conf\.py", refused.stderr)
        assert named and named[0] in case.refused, refused.stderr
        for name in case.refused:  # each alone is refused too, by name
            (tmp_path / "gunicorn.conf.py").write_text(without(case.conf, tuple(n for n in case.refused if n != name)))
            alone = print_config("clusterserve", case, tmp_path)
            assert alone.returncode == 2 and f"setting '{name}' from config file gunicorn.conf.py" in alone.stderr
        (tmp_path / "gunicorn.conf.py").write_text(without(case.conf, case.refused))

    theirs = print_config("gunicorn", case, tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    ours = print_config("clusterserve", case, tmp_path)
    assert ours.returncode == 0, ours.stderr
    differences = compare(case, gunicorns_settings(theirs.stdout), clusterserves_settings(ours.stdout), tmp_path)
    assert differences == [], "\n".join(differences)

    if case.daemon:
        serve_as_daemon(case, tmp_path)
        return
    # Served on a free loopback port: the command line's bind wins over the file's.
    with running([*([case.app] if case.app else [])], cwd=tmp_path, env=case.env,
                 bind="127.0.0.1:0") as server:
        assert wait_until(lambda: server.log().count(" ready, serving ") >= 1, timeout=START)
        status, body = get(server.host, server.port, case.tls)
        assert status == 200 and case.body in body, (status, body[:200], server.log())
        assert "Config file: gunicorn.conf.py (found in the working directory)" in server.log()


def serve_as_daemon(case: Case, cwd: Path) -> None:
    """The config's daemon = True: the command returns once serving, on its bind."""
    conf = (cwd / "gunicorn.conf.py").read_text()
    (cwd / "gunicorn.conf.py").write_text(conf.replace('"127.0.0.1:5000"', '"127.0.0.1:0"'))
    result = subprocess.run(command("clusterserve", case), cwd=cwd, env=environment(case),
                            capture_output=True, text=True, timeout=START)
    pid = int((cwd / "gunicorn_pid").read_text()) if (cwd / "gunicorn_pid").exists() else 0
    try:
        assert result.returncode == 0, result.stderr
        log = (cwd / "gunicorn_error.log").read_text()
        port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+) ", log).group(1))
        status, body = get("127.0.0.1", port)
        assert status == 200 and case.body in body
        assert wait_until(lambda: '"GET / HTTP/1.1" 200' in (cwd / "gunicorn_access.log").read_text())
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not is_alive(pid), timeout=15)
    finally:
        if pid:
            kill_tree(pid)
