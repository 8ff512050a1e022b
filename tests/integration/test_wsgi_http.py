"""The WSGI worker's HTTP/1.1 over real sockets: keep-alive, pipelining, chunked
bodies, HTTP/1.0, HEAD, 100-continue, bodiless statuses and app errors.

``Conn`` is a raw client shared with the other ``test_wsgi_*`` modules: it
reads responses exactly as framed, so a stray byte shows up in the next one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from tests.harness import ServerProcess, running

pytestmark = pytest.mark.http_path

APP = "tests.apps.wsgi_behaviour:app"


@dataclass
class Raw:
    """One response as it came off the wire."""

    version: str
    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunked: bool = False

    def json(self) -> dict:
        return json.loads(self.body)


class Conn:
    """A client connection that sends raw bytes and parses responses itself."""

    def __init__(self, server: ServerProcess, timeout: float = 5.0) -> None:
        self.sock = server.connect(timeout)
        self.buffer = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str, method: str = "GET", headers: str = "") -> Raw:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        return self.response(method)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def rest(self) -> bytes:
        """Everything until the server closes."""
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError):
            pass
        data, self.buffer = self.buffer, b""
        return data

    def head(self) -> Raw:
        """Status line and headers of the next response (including 1xx)."""
        version, status, *_ = self._line().decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        return Raw(version, int(status), headers)

    def response(self, method: str = "GET") -> Raw:
        """The next final response, its body read as its headers frame it."""
        raw = self.head()
        while 100 <= raw.status < 200:
            raw = self.head()
        if method == "HEAD" or raw.status in (204, 304):
            return raw
        if raw.headers.get("transfer-encoding", "").lower() == "chunked":
            raw.chunked = True
            raw.body = self.chunks()
        elif "content-length" in raw.headers:
            raw.body = self._exact(int(raw.headers["content-length"]))
        else:
            raw.body = self.rest()
        return raw

    def chunks(self) -> bytes:
        """A chunked body up to and including its last chunk and trailer."""
        body = b""
        while size := int(self._line().split(b";")[0], 16):
            body += self._exact(size)
            assert self._exact(2) == b"\r\n"
        while self._line():
            pass
        return body

    def closed_within(self, timeout: float) -> bool:
        """True if the server closes (nothing more to read) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        self.buffer += data
        return not data


def pid_of(raw: Raw) -> int:
    return int(raw.headers["x-pid"])


@pytest.fixture(scope="module")
def server(dispatch):
    with running([APP, "-w", "1", "--threads", "4", "--keep-alive", "1", "--dispatch", dispatch],
                 workers=1) as server:
        yield server


# -- keep-alive -----------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with Conn(server) as conn:
        responses = [conn.get(f"/environ_dump/{n}") for n in range(5)]
    assert [r.status for r in responses] == [200] * 5
    assert [r.json()["PATH_INFO"] for r in responses] == [f"/environ_dump/{n}" for n in range(5)]
    assert len({pid_of(r) for r in responses}) == 1
    assert all("close" not in r.headers.get("connection", "") for r in responses)
    peers = {r.json()["REMOTE_PORT"] for r in responses}
    assert len(peers) == 1  # really one connection


def test_idle_keep_alive_connection_is_closed_after_keepalive_seconds(server):
    with Conn(server) as conn:
        assert conn.get("/hello").status == 200
        idle_since = time.monotonic()
        assert not conn.closed_within(0.6)
        assert conn.closed_within(3.0)
        assert 0.8 < time.monotonic() - idle_since < 2.8


def test_client_connection_close_is_honoured(server):
    with Conn(server) as conn:
        raw = conn.get("/hello", headers="Connection: close\r\n")
        assert raw.status == 200 and raw.headers["connection"].lower() == "close"
        assert conn.closed_within(2.0)


def test_unread_request_body_is_skipped_before_the_next_request(server):
    with Conn(server) as conn:
        conn.send(b"POST /hello HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
                  + b"POST /hello HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n\r\n"
                  b"GET /environ_dump HTTP/1.1\r\nHost: test\r\n\r\n")
        assert [conn.response().status for _ in range(2)] == [200, 200]
        assert conn.response().json()["REQUEST_METHOD"] == "GET"


def test_keep_alive_0_closes_after_each_response(dispatch):
    with running([APP, "-w", "1", "--keep-alive", "0", "--dispatch", dispatch], workers=1) as server, \
            Conn(server) as conn:
        raw = conn.get("/hello")
        assert raw.status == 200 and raw.body == b"hello\n"
        assert raw.headers["connection"].lower() == "close"
        assert conn.closed_within(2.0)


# -- pipelining and chunked bodies -------------------------------------------------


def test_pipelined_requests_get_responses_in_order(server):
    with Conn(server) as conn:
        conn.send(b"GET /environ_dump/first HTTP/1.1\r\nHost: test\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nsecond"
                  b"GET /stream?n=3 HTTP/1.1\r\nHost: test\r\n\r\n")
        first, second, third = conn.response(), conn.response(), conn.response()
        assert first.json()["PATH_INFO"] == "/environ_dump/first"
        assert second.body == b"second"
        assert third.chunked and third.body == b"part 0\npart 1\npart 2\n"
        assert conn.get("/hello").body == b"hello\n"  # and the connection still works


def test_chunked_request_body_is_decoded(server):
    with Conn(server) as conn:
        conn.send(b"POST /body?how=readline HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"4\r\nline\r\n")
        time.sleep(0.1)
        conn.send(b"5\r\n 1\nli\r\n8;ext=1\r\nne 2\nend\r\n0\r\nX-Trailer: t\r\n\r\n")
        data = conn.response().json()
        assert data["pieces"] == ["line 1\n", "line 2\n", "end"]
        assert data["content_length"] is None
        assert data["after_end"] == ""
        assert conn.get("/hello").body == b"hello\n"


def test_response_without_content_length_is_chunked(server):
    with Conn(server) as conn:
        raw = conn.get("/stream?n=4")
        assert raw.status == 200
        assert raw.chunked and "content-length" not in raw.headers
        assert raw.body == b"".join(f"part {n}\n".encode() for n in range(4))
        assert conn.get("/hello").body == b"hello\n"


# -- HTTP/1.0, HEAD, Expect, bodiless statuses -----------------------------------------


def test_http_1_0_request_gets_a_response_and_the_connection_closes(server):
    with Conn(server) as conn:
        conn.send(b"GET /environ_dump HTTP/1.0\r\n\r\n")
        raw = conn.response()
        assert raw.status == 200 and raw.json()["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert conn.closed_within(2.0)


def test_http_1_0_streamed_response_is_delimited_by_close(server):
    with Conn(server) as conn:
        conn.send(b"GET /stream?n=3 HTTP/1.0\r\n\r\n")
        raw = conn.response()
        assert not raw.chunked and "content-length" not in raw.headers
        assert raw.body == b"part 0\npart 1\npart 2\n"  # read until the server closed


@pytest.mark.parametrize("path", ["/hello", "/stream?n=3"])
def test_head_sends_headers_and_no_body(server, path):
    with Conn(server) as conn:
        raw = conn.get(path, method="HEAD")
        assert raw.status == 200 and raw.headers["content-type"] == "text/plain"
        if path == "/hello":
            assert raw.headers["content-length"] == "6"
        # Any body byte would be read as the start of this next response.
        assert conn.get("/hello").body == b"hello\n"
        assert conn.buffer == b""


def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    with Conn(server) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = conn.head()
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        conn.send(b"hello")
        raw = conn.response()
        assert raw.status == 200 and raw.body == b"hello"
        assert conn.get("/hello").body == b"hello\n"


def test_expect_100_continue_is_not_sent_when_the_app_ignores_the_body(server):
    with Conn(server) as conn:
        conn.send(b"POST /hello HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        raw = conn.head()
        assert raw.status == 200


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses_send_no_body(server, code):
    with Conn(server) as conn:
        raw = conn.get(f"/status?code={code}")
        assert raw.status == code
        assert "transfer-encoding" not in raw.headers
        assert raw.headers.get("content-length", "0") == "0"
        assert conn.get("/hello").body == b"hello\n"
        assert conn.buffer == b""


# -- app errors -----------------------------------------------------------------


@pytest.mark.parametrize("path,message", [
    ("/fail_before_start", "RuntimeError: failure-before-start_response"),
    ("/fail_after_start", "RuntimeError: failure-after-start_response"),
])
def test_app_exception_gives_500_and_a_logged_traceback(server, path, message):
    [worker] = server.workers()
    mark = len(server.log())
    with Conn(server) as conn:
        raw = conn.get(path)
        assert raw.status == 500
        assert raw.headers["connection"].lower() == "close"
    server.wait_for_log(r"Traceback \(most recent call last\):(.|\n)*" + message, after=mark)
    with Conn(server) as conn:
        assert pid_of(conn.get("/hello")) == worker
    assert server.workers() == [worker]
