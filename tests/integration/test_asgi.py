"""The ASGI worker (uvicorn's protocols) in every dispatch mode, and uvicorn's settings."""

import json
import signal
import socket
import time

import pytest

from tests.harness import running, wait_until

pytestmark = pytest.mark.http_path

ECHO = "tests.apps.asgi_apps:echo"


@pytest.fixture(scope="module")
def server(dispatch):
    with running([ECHO, "-w", "2", "--dispatch", dispatch, "--root-path", "/mount"], workers=2) as server:
        yield server


def echo(server, path="/", **kwargs):
    status, headers, body = server.get(path, **kwargs)
    assert status == 200
    return headers, json.loads(body)


def test_serves_asgi_from_every_worker(server):
    pids = {echo(server)[1]["pid"] for _ in range(30)}
    assert pids <= set(server.workers()) and pids
    assert "serving ASGI" in server.log()


def test_request_details_and_headers(server):
    headers, seen = echo(server, "/a/b?x=1", headers={"X-Test": "yes"})
    assert seen["method"] == "GET" and seen["path"] in ("/a/b", "/mount/a/b")
    assert seen["root_path"] == "/mount"
    assert seen["headers"]["x-test"] == "yes"
    assert headers["server"] == "clusterserve"
    assert "date" in headers


def test_post_body_and_keep_alive(server):
    conn = server.http()
    try:
        for n in range(3):
            conn.request("POST", "/", body=b"x" * (1000 * (n + 1)))
            response = conn.getresponse()
            assert json.loads(response.read())["body"] == "x" * (1000 * (n + 1))
    finally:
        conn.close()


def test_proxy_headers_from_a_trusted_peer(server):
    _, seen = echo(server, headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert seen["client"][0] == "203.0.113.7"
    assert seen["scheme"] == "https"


def test_websocket_echo(server):
    from websockets.sync.client import connect

    with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=5, close_timeout=2) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo: hi"


def test_term_lets_the_request_in_flight_finish(start_server, dispatch):
    server = start_server([ECHO, "-w", "1", "--dispatch", dispatch], workers=1)
    conn = server.http()
    conn.request("GET", "/?sleep=1")
    time.sleep(0.3)
    server.send(signal.SIGTERM)
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["path"] == "/"
    assert server.wait() == 0


def test_lifespan_startup_before_ready_and_shutdown_on_stop(start_server, tmp_path):
    record = tmp_path / "lifespan"
    server = start_server(["tests.apps.asgi_apps:with_lifespan", "-w", "2"], workers=2,
                          env={"LIFESPAN_LOG": str(record)})
    # Ready was reported only after startup: both startups are recorded already.
    started = sorted(int(line.split()[1]) for line in record.read_text().splitlines())
    assert started == sorted(server.workers())
    _, seen = echo(server)
    assert seen["state"]["started_by"] == seen["pid"]
    assert server.stop() == 0
    lines = record.read_text().splitlines()
    assert sorted(line for line in lines if line.startswith("shutdown")) == \
        sorted(f"shutdown {pid}" for pid in started)


@pytest.mark.parametrize("args", [
    ["--interface", "asgi"],
    ["-k", "uvicorn.workers.UvicornWorker"],
    ["-k", "uvicorn_worker.UvicornWorker"],
])
def test_asgi2_app_with_explicit_interface(start_server, args):
    server = start_server(["tests.apps.asgi_apps:Asgi2App", "-w", "1", *args], workers=1)
    assert server.get("/") == (200, server.get("/")[1], b"asgi2")


def test_uvicorn_command_line_spellings(start_server, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GREETING=from-env-file\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(["tests.apps.asgi_apps:create_app", "--factory", "--host", "127.0.0.1",
                           "--port", str(port), "--env-file", str(env_file), "--http", "httptools",
                           "--loop", "uvloop", "--lifespan", "on", "--workers", "1"],
                          bind=None, workers=1)
    assert server.port == port
    status, _, body = server.get("/")
    assert status == 200 and body.startswith(b"hello from")


def test_uds_flag_serves_on_a_unix_socket(start_server, tmp_path):
    path = tmp_path / "asgi.sock"
    start_server(["tests.apps.asgi_apps:hello", "--uds", str(path), "-w", "1"], bind=None, workers=1)
    assert wait_until(path.exists)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_limit_concurrency_answers_503(start_server):
    # uvicorn counts connections and tasks: with 2, a second client is over the limit.
    server = start_server([ECHO, "-w", "1", "--limit-concurrency", "2"], workers=1)
    busy = server.http()
    busy.request("GET", "/?sleep=1")
    time.sleep(0.3)
    assert server.get("/")[0] == 503
    assert busy.getresponse().status == 200


def test_access_log_uses_the_wsgi_workers_atoms(start_server):
    fmt = "custom %(h)s %(r)s %(s)s %(b)s %({user-agent}i)s %({content-type}o)s %(D)s"
    server = start_server([ECHO, "-w", "1", "--access-logfile", "-", "--access-logformat", fmt],
                          workers=1)
    server.get("/logged?q=1", headers={"User-Agent": "probe/1"})
    match = server.wait_for_log(
        r"custom 127\.0\.0\.1 GET /logged\?q=1 HTTP/1\.1 200 (\d+) probe/1 application/json (\d+)")
    assert int(match.group(1)) > 0


def test_chunked_request_body(server):
    conn = server.http()
    try:
        conn.request("POST", "/", body=iter([b"hello", b" world"]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert json.loads(response.read())["body"] == "hello world"
    finally:
        conn.close()


def test_streaming_response_is_chunked(start_server, dispatch):
    server = start_server(["tests.apps.asgi_apps:stream", "-w", "1", "--dispatch", dispatch], workers=1)
    status, headers, body = server.get("/?n=4")
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body == b"part 0\npart 1\npart 2\npart 3\n"
