"""PEP 3333 as the WSGI worker implements it, seen by apps over real sockets:
the environ, wsgi.input, wsgi.errors, start_response and exc_info, write(),
close(), wsgi.file_wrapper and wsgiref.validate."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
from pathlib import Path

import pytest

from tests.harness import ServerProcess, request, running, wait_until
from tests.integration.test_wsgi_http import APP, Conn

pytestmark = pytest.mark.http_path

UNSAFE_LOG = re.compile(r"Traceback|AssertionError|WSGIWarning|Exception ignored|Error handling")


@pytest.fixture(scope="module")
def server():
    with running([APP, "-w", "2", "--threads", "4"], workers=2) as server:
        yield server


def post(server: ServerProcess, path: str, data: bytes, headers: dict[str, str] | None = None) -> dict:
    status, _, body = request(server, "POST", path, body=data, headers=headers)
    assert status == 200, body
    return json.loads(body)


# -- environ ---------------------------------------------------------------------


def test_environ_is_complete(server):
    with Conn(server) as conn:
        conn.send(b"POST /environ_dump/caf%C3%A9/a%20b%2Fc?x=1&y=%20 HTTP/1.1\r\n"
                  b"Host: example.test:8123\r\nX-Dup: one\r\nX-Dup: two\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 3\r\nUser-Agent: tester\r\nX_Underscored: dropped\r\nX-Latin: caf\xe9\r\n\r\nabc")
        env = conn.response().json()
        local_port = conn.sock.getsockname()[1]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ_dump/caf\u00c3\u00a9/a b/c"  # UTF-8 bytes as latin-1
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.test", "8123")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_HOST"] == "example.test:8123"
    assert env["HTTP_USER_AGENT"] == "tester"
    assert env["HTTP_X_DUP"] == "one,two"
    assert env["HTTP_X_LATIN"] == "caf\u00e9"  # header bytes decoded as latin-1
    assert not any("UNDERSCORED" in key for key in env)
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.input"] and env["wsgi.errors"] and env["wsgi.file_wrapper"]
    assert env["key_types"] == ["str"]


def test_environ_without_host_uses_the_socket_address(server):
    with Conn(server) as conn:
        conn.send(b"GET /environ_dump HTTP/1.0\r\n\r\n")
        env = conn.response().json()
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["QUERY_STRING"] == ""


@pytest.mark.parametrize("host,headers,expected", [
    ("example.test", "", ("example.test", "80", "http")),
    ("[::1]:8123", "", ("::1", "8123", "http")),
    ("example.test", "X-Forwarded-Proto: https\r\n", ("example.test", "443", "https")),
])
def test_server_name_port_and_scheme_follow_host_and_trusted_proxy(server, host, headers, expected):
    with Conn(server) as conn:
        conn.send(f"GET /environ_dump HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        env = conn.response().json()
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == expected


def test_script_name_setting_and_header_strip_the_prefix():
    app = "tests.apps.wsgi_behaviour:environ_dump"
    with running([app, "-w", "1", "-e", "SCRIPT_NAME=/prefix"], workers=1) as server, Conn(server) as conn:
        def names(path, headers=""):
            env = conn.get(path, headers=headers).json()
            return env["SCRIPT_NAME"], env["PATH_INFO"]

        assert names("/prefix/a/b?q=1") == ("/prefix", "/a/b")
        assert names("/prefix") == ("/prefix", "")
        assert names("/prefix/") == ("/prefix", "/")
        # Only a whole path segment is a prefix; PATH_INFO always starts with "/".
        assert names("/prefixed/x")[1] == "/prefixed/x"
        # A trusted proxy (127.0.0.1 by default) may set it with a header.
        assert names("/mount/x", headers="SCRIPT_NAME: /mount\r\n") == ("/mount", "/x")


# -- wsgi.input ------------------------------------------------------------------------


def test_input_read_with_a_size_returns_pieces_then_empty(server):
    data = post(server, "/body?how=readn&n=1000", b"x" * 2500)
    assert data["sizes"] == [1000, 1000, 500]
    assert data["after_end"] == ""
    assert data["content_length"] == "2500"


@pytest.mark.parametrize("how,size,expected", [
    ("readline", -1, ["one\n", "two\n", "\n", "three"]),
    ("readline", 3, ["one", "\n", "two", "\n", "\n", "thr", "ee"]),
    ("iter", -1, ["one\n", "two\n", "\n", "three"]),
    ("readlines", -1, ["one\n", "two\n", "\n", "three"]),
    ("read", -1, ["one\ntwo\n\nthree"]),
])
def test_input_lines(server, how, size, expected):
    data = post(server, f"/body?how={how}&n={size}", b"one\ntwo\n\nthree")
    assert data["pieces"] == expected
    assert data["after_end"] == ""


def test_five_megabyte_upload_read_in_pieces(server):
    payload = os.urandom(5 * 1024 * 1024)
    data = post(server, "/body?how=readn&n=65536", payload)
    assert data["length"] == len(payload)
    assert data["sha256"] == hashlib.sha256(payload).hexdigest()
    assert data["sizes"] == [65536] * 80


def test_input_is_streamed_not_buffered_before_the_app_runs(server):
    """The app answers after the first line while the client still holds back the rest."""
    with Conn(server) as conn:
        conn.send(b"POST /first_line HTTP/1.1\r\nHost: test\r\nContent-Length: 20\r\n\r\nfirst\n")
        raw = conn.response()
        assert raw.body == b"first\n"
        conn.send(b"rest of body!!")  # 14 more bytes: the worker skips them
        assert conn.get("/hello").body == b"hello\n"


# -- wsgi.errors ------------------------------------------------------------------------


class ErrorLogServer(ServerProcess):
    """A server whose error log goes to its own file (read along with the output)."""

    def __init__(self, args: list[str], error_log: Path) -> None:
        super().__init__([*args, "--error-logfile", str(error_log)])
        self.error_log = error_log

    def log(self) -> str:
        text = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        return super().log() + text


def test_wsgi_errors_go_to_the_error_log(tmp_path):
    error_log = tmp_path / "error.log"
    server = ErrorLogServer([APP, "-w", "1"], error_log)
    try:
        server.start(wait_ready=1)
        assert request(server, "GET", "/errors?text=wsgi-errors-marker")[0] == 200
        assert wait_until(lambda: "wsgi-errors-marker via writelines 2" in error_log.read_text(), timeout=5)
        text = error_log.read_text()
        for how in ("write", "writelines 1", "writelines 2"):
            assert f"wsgi-errors-marker via {how}\n" in text
    finally:
        server.stop()
        os.unlink(server.log_file.name)


# -- start_response, write(), close() ------------------------------------------------------


def test_exc_info_before_headers_replaces_the_response(server):
    status, headers, body = request(server, "GET", "/exc_info_before_headers")
    assert status == 503
    assert headers["x-replaced"] == "yes"
    assert body == b"error page\n"


def test_exc_info_after_headers_aborts_the_connection(server, tmp_path):
    marker = tmp_path / "marker"
    mark = len(server.log())
    with Conn(server) as conn:
        conn.send(f"GET /exc_info_after_headers?marker={marker} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = conn.head()
        assert head.status == 200 and head.headers["transfer-encoding"] == "chunked"
        rest = conn.rest()  # the server closes before the last chunk
    assert b"first chunk\n" in rest
    assert not rest.endswith(b"0\r\n\r\n")
    assert b"never" not in rest
    assert wait_until(lambda: marker.exists() and marker.read_text() == "closed\n", timeout=5)
    server.wait_for_log(r"ValueError: too late", after=mark)


def test_start_response_may_be_called_on_first_iteration(server):
    status, headers, body = request(server, "GET", "/lazy")
    assert (status, headers["x-lazy"], body) == (200, "yes", b"lazy body\n")


def test_write_callable_and_iterable_body_both_arrive(server):
    status, _, body = request(server, "GET", "/write_callable")
    assert status == 200
    assert body == b"written 1\nwritten 2\nreturned 3\n"


def test_close_is_called_after_a_complete_response(server, tmp_path):
    marker = tmp_path / "marker"
    status, _, body = request(server, "GET", f"/closing?chunks=3&marker={marker}")
    assert status == 200, body
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert wait_until(lambda: marker.exists() and marker.read_text() == "closed\n", timeout=5)


def test_close_is_called_when_the_client_disconnects_mid_response(server, tmp_path):
    marker = tmp_path / "marker"
    with Conn(server) as conn:
        conn.send(f"GET /closing?chunks=2000&delay=0.005&marker={marker} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert conn.head().status == 200
        while b"chunk 1\n" not in conn.buffer:
            conn._fill()
    assert wait_until(lambda: marker.exists(), timeout=5)
    assert marker.read_text() == "closed\n"
    assert request(server, "GET", "/hello")[0] == 200


def test_close_is_called_when_iteration_raises(server, tmp_path):
    marker = tmp_path / "marker"
    mark = len(server.log())
    with Conn(server) as conn:
        conn.send(f"GET /fail_during_iteration?marker={marker} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = conn.head()
        rest = conn.rest()
    assert head.status == 200
    assert b"chunk 0\n" in rest and not rest.endswith(b"0\r\n\r\n")
    assert wait_until(lambda: marker.exists() and marker.read_text() == "closed\n", timeout=5)
    server.wait_for_log(r"RuntimeError: failing at chunk 1", after=mark)


# -- wsgi.file_wrapper ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(os.urandom(300_000))
    return path


@pytest.mark.parametrize("offset", [0, 1000])
def test_file_wrapper_sends_the_file_with_content_length(server, served_file, offset):
    data = served_file.read_bytes()
    with Conn(server) as conn:
        raw = conn.get(f"/file?path={served_file}&offset={offset}")
        assert raw.status == 200
        assert raw.headers["content-length"] == str(len(data) - offset)
        assert raw.body == data[offset:]
        assert conn.get("/hello").body == b"hello\n"


def test_file_wrapper_over_a_file_without_fileno_is_iterated(server, served_file):
    status, _, body = request(server, "GET", f"/file?path={served_file}&buffer=1")
    assert status == 200
    assert body == served_file.read_bytes()


def test_file_wrapper_head_sends_no_body(server, served_file):
    with Conn(server) as conn:
        raw = conn.get(f"/file?path={served_file}", method="HEAD")
        assert raw.status == 200
        assert raw.headers["content-length"] == str(served_file.stat().st_size)
        assert conn.get("/hello").body == b"hello\n"
        assert conn.buffer == b""


# -- wsgiref.validate ------------------------------------------------------------------------


def test_validated_app_serves_get_post_and_head_cleanly(server):
    mark = len(server.log())
    conn = server.http()
    try:
        conn.request("GET", "/validated/page?x=1")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"GET /validated/page\n")
        conn.request("POST", "/validated", body=b"some data", headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"got some data")
        conn.request("HEAD", "/validated/page")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == str(len(b"HEAD /validated/page\n"))
        assert response.read() == b""
    except http.client.HTTPException as err:
        pytest.fail(f"{err!r}\n{server.log()[mark:]}")
    finally:
        conn.close()
    # One more request from the same worker pool: the previous iterables are
    # gone, so the validator's "not closed" check would have fired by now.
    assert request(server, "GET", "/validated")[0] == 200
    assert not UNSAFE_LOG.search(server.log(), mark), server.log()[mark:]
