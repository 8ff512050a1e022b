"""TLS (certfile, keyfile, ca_certs, cert_reqs, ciphers, ssl_version) on real servers.

Certificates are made at test time with trustme: a CA, a server
certificate for 127.0.0.1 and a client certificate.  Every HTTPS request
verifies the server against that CA.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme

from tests.harness import ROOT, running

pytestmark = pytest.mark.http_path

WSGI_APP = "tests.apps.wsgi_behaviour:app"
ASGI_APP = "tests.apps.asgi_apps:echo"
APPS = {"wsgi": WSGI_APP, "asgi": ASGI_APP}


class Certs:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.dir = directory
        self.server_pem = directory / "server.pem"  # key and chain in one file
        self.server_key = directory / "server.key"
        self.server_chain = directory / "server.crt"
        self.ca_pem = directory / "ca.pem"
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_and_cert_chain_pem.write_to_path(str(self.server_pem))
        server.private_key_pem.write_to_path(str(self.server_key))
        for index, blob in enumerate(server.cert_chain_pems):
            blob.write_to_path(str(self.server_chain), append=index > 0)
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.client = self.ca.issue_cert("client@example.com")

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if with_cert:
            self.client.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("tls"))


def https_get(port: int, path: str, context: ssl.SSLContext, timeout: float = 5.0) -> tuple[int, bytes]:
    url = f"https://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, context=context, timeout=timeout) as answer:
        return answer.status, answer.read()


@pytest.fixture(scope="module", params=[("wsgi", "shared"), ("wsgi", "round-robin"),
                                        ("asgi", "shared"), ("asgi", "round-robin")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def tls_server(request, certs):
    interface, dispatch = request.param
    args = [APPS[interface], "-w", "1", "--dispatch", dispatch, "-t", "4", "--header-timeout", "4",
            "--certfile", str(certs.server_chain), "--keyfile", str(certs.server_key)]
    with running(args, workers=1) as server:
        server.interface = interface
        yield server


def scheme_seen(server, body: bytes) -> str:
    data = json.loads(body)
    return data["wsgi.url_scheme"] if server.interface == "wsgi" else data["scheme"]


def check_serving(server, certs) -> None:
    path = "/environ_dump" if server.interface == "wsgi" else "/"
    status, body = https_get(server.port, path, certs.client_context())
    assert status == 200
    assert scheme_seen(server, body) == "https"


def test_https_request_verified_against_the_ca(tls_server, certs):
    check_serving(tls_server, certs)
    assert f"Listening at: https://127.0.0.1:{tls_server.port} " in tls_server.log()


def test_plain_http_on_the_tls_port_fails_cleanly(tls_server, certs):
    workers = tls_server.workers()
    with tls_server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer
    check_serving(tls_server, certs)
    assert tls_server.workers() == workers


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x00\x10" + b"\xff" * 16,  # a handshake record that is not a ClientHello
    b"\x16\x03\x01\xff\xff" + bytes(range(256)) * 4,  # announces more than it sends, then closes
    bytes(range(256)),
], ids=["bad-hello", "truncated", "binary"])
def test_a_garbage_handshake_never_kills_the_worker(tls_server, certs, garbage):
    workers = tls_server.workers()
    with tls_server.connect() as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        _read_until_closed(sock)
    check_serving(tls_server, certs)
    assert tls_server.workers() == workers
    assert "Traceback" not in tls_server.log()


def test_silent_and_half_handshakes_do_not_stop_others(tls_server, certs):
    """One worker, one app thread: clients stalled before or inside the handshake
    hold no thread and no loop, so a real client is served at once."""
    stalled = [tls_server.connect() for _ in range(5)]
    half = tls_server.connect()
    hello = _client_hello(certs)
    half.sendall(hello[: len(hello) // 2])
    try:
        started = time.monotonic()
        check_serving(tls_server, certs)
        assert time.monotonic() - started < 2.0
    finally:
        for sock in [*stalled, half]:
            sock.close()


def test_a_stalled_handshake_is_closed_at_the_head_timeout(tls_server):
    """--header-timeout 4 (WSGI), -t 4 (ASGI's ssl_handshake_timeout): a client that never
    finishes its handshake is closed, not kept forever."""
    with tls_server.connect(timeout=15) as sock:
        started = time.monotonic()
        assert _read_until_closed(sock, timeout=12) == b""
        assert time.monotonic() - started < 10


def test_a_retiring_round_robin_worker_keeps_its_tls_connections(certs):
    """A stopping round-robin worker hands untouched connections back to the arbiter;
    one whose TLS handshake is done is not untouched: another worker could not
    carry on its session.  It stays with its worker and is served."""
    args = [WSGI_APP, "-w", "2", "--dispatch", "round-robin", "--certfile", str(certs.server_pem)]
    with running(args, workers=2) as server:
        context = certs.client_context()
        clients = [context.wrap_socket(server.connect(), server_hostname="127.0.0.1") for _ in range(6)]
        try:
            server.send(signal.SIGTTOU)
            server.wait_for_log("stopping: received SIGTERM")
            for client in clients:
                client.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = [_first_bytes(client) for client in clients]
        finally:
            for client in clients:
                client.close()
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), answers


def test_file_wrapper_falls_back_from_sendfile_over_tls(certs, tmp_path):
    """wsgi.file_wrapper on a real file uses sendfile in clear; over TLS it must
    go through the TLS layer and arrive intact."""
    payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    args = [WSGI_APP, "-w", "1", "--certfile", str(certs.server_pem)]
    with running(args, workers=1) as server:
        status, body = https_get(server.port, f"/file?path={path}", certs.client_context())
        assert status == 200
        assert body == payload
        status, body = https_get(server.port, f"/file?path={path}&offset=1000", certs.client_context())
        assert body == payload[1000:]


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_client_certificates_required(certs, interface):
    args = [APPS[interface], "-w", "1", "--certfile", str(certs.server_pem),
            "--cert-reqs", "2", "--ca-certs", str(certs.ca_pem)]
    with running(args, workers=1) as server:
        status, _ = https_get(server.port, "/", certs.client_context(with_cert=True))
        assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
            https_get(server.port, "/", certs.client_context())
        workers = server.workers()
        status, _ = https_get(server.port, "/", certs.client_context(with_cert=True))
        assert status == 200
        assert server.workers() == workers


def test_ssl_version_sets_the_oldest_version(certs):
    args = [WSGI_APP, "-w", "1", "--certfile", str(certs.server_pem), "--ssl-version", "TLSv1_3"]
    with running(args, workers=1) as server:
        old_client = certs.client_context()
        old_client.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            https_get(server.port, "/", old_client)
        assert https_get(server.port, "/", certs.client_context())[0] == 200


@pytest.mark.parametrize("args,setting", [
    (["--certfile", "/nonexistent/cert.pem"], "certfile"),
    (["--certfile", "{server_chain}", "--keyfile", "{ca_pem}"], "keyfile"),
    (["--certfile", "{server_pem}", "--cert-reqs", "2"], "cert_reqs"),
    (["--certfile", "{server_pem}", "--ciphers", "NO-SUCH-CIPHER"], "ciphers"),
    (["--certfile", "{server_pem}", "--ca-certs", "/nonexistent/ca.pem"], "ca_certs"),
    (["--keyfile", "{server_key}"], "keyfile"),
])
def test_bad_tls_settings_stop_the_start_with_one_line(certs, args, setting):
    paths = {"server_chain": certs.server_chain, "server_pem": certs.server_pem,
             "server_key": certs.server_key, "ca_pem": certs.ca_pem}
    argv = [a.format(**paths) for a in args]
    result = subprocess.run([sys.executable, "-m", "clusterserve", WSGI_APP, "-b", "127.0.0.1:0", *argv],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"setting '{setting}'" in lines[0], result.stderr


def test_obsolete_ssl_version_warns(certs):
    result = subprocess.run([sys.executable, "-m", "clusterserve", WSGI_APP, "--check-config",
                             "--certfile", str(certs.server_pem), "--ssl-version", "TLSv1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "warning: setting 'ssl_version' is TLSv1" in result.stderr


# -- helpers ---------------------------------------------------------------------------


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _first_bytes(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError as err:
        return repr(err).encode()


def _client_hello(certs) -> bytes:
    """The first flight of a real TLS client, made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()
