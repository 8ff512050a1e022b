"""Proxies: X-Forwarded-For, X-Forwarded-Proto, Forwarded (RFC 7239) and the
PROXY protocol (v1 and v2, built here byte by byte), only from trusted peers.

The WSGI app dumps its environ; the ASGI app echoes its scope.  The test
client connects from 127.0.0.1, which ``--forwarded-allow-ips`` makes
trusted or not.
"""

from __future__ import annotations

import socket
import ssl
import struct

import pytest
import trustme

from tests.harness import running
from tests.integration.test_wsgi_http import Conn

pytestmark = pytest.mark.http_path

WSGI_APP = "tests.apps.wsgi_behaviour:app"
ASGI_APP = "tests.apps.asgi_apps:echo"
TRUSTED = "127.0.0.1,10.0.0.0/8"

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str = "192.0.2.10", destination: str = "198.51.100.1", sport: int = 56324,
             dport: int = 443, family: str = "TCP4") -> bytes:
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()


def proxy_v2(source: str = "192.0.2.10", destination: str = "198.51.100.1", sport: int = 56324,
             dport: int = 443, *, command: int = 1, tlvs: bytes = b"") -> bytes:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    addresses = (socket.inet_pton(family, source) + socket.inet_pton(family, destination)
                 + struct.pack("!HH", sport, dport))
    family_byte = 0x21 if family == socket.AF_INET6 else 0x11
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family_byte]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def environ_of(server, headers: str = "", prefix: bytes = b"") -> dict:
    with Conn(server) as conn:
        conn.send(prefix)
        return conn.get("/environ_dump", headers=headers).json()


# -- X-Forwarded-*, Forwarded ------------------------------------------------------------


@pytest.fixture(scope="module")
def trusting(tmp_path_factory):
    """WSGI, 127.0.0.1 and 10/8 trusted, X-Scheme added to the scheme headers."""
    conf = tmp_path_factory.mktemp("proxy") / "conf.py"
    conf.write_text(f"forwarded_allow_ips = {TRUSTED!r}\n"
                    "secure_scheme_headers = {'X-FORWARDED-PROTO': 'https', 'X-Scheme': 'https'}\n")
    with running([WSGI_APP, "-w", "1", "-c", str(conf)], workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def untrusting():
    """WSGI; only 10.9.9.9 is trusted, so the test client (127.0.0.1) is not."""
    with running([WSGI_APP, "-w", "1", "--forwarded-allow-ips", "10.9.9.9"], workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def asgi_trusting():
    with running([ASGI_APP, "-w", "1", "--forwarded-allow-ips", TRUSTED], workers=1) as server:
        yield server


# X-Forwarded-For, and the client both workers must pick (uvicorn's rule: the
# right-most untrusted hop; the left-most when every hop is trusted).
CHAINS = [
    ("203.0.113.7", "203.0.113.7", "0"),
    ("203.0.113.7, 10.0.0.1", "203.0.113.7", "0"),
    ("198.51.100.2, 203.0.113.7, 10.0.0.1, 10.0.0.2", "203.0.113.7", "0"),  # a spoofed left-most hop
    ("10.0.0.3, 10.0.0.1", "10.0.0.3", "0"),
    ("203.0.113.7:4711, 10.0.0.1", "203.0.113.7", "4711"),
    ("[2001:db8::7]:4711", "2001:db8::7", "4711"),
    ("unknown, 10.0.0.1", "unknown", "0"),
]


@pytest.mark.parametrize("chain,address,port", CHAINS)
def test_x_forwarded_for_from_a_trusted_peer(trusting, asgi_trusting, chain, address, port):
    environ = environ_of(trusting, f"X-Forwarded-For: {chain}\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (address, port)
    with Conn(asgi_trusting) as conn:
        scope = conn.get("/", headers=f"X-Forwarded-For: {chain}\r\n").json()
    assert scope["client"] == [address, int(port)], "the WSGI and ASGI workers disagree"


def test_x_forwarded_for_lines_are_one_list(trusting):
    environ = environ_of(trusting, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.1\r\n")
    assert environ["REMOTE_ADDR"] == "203.0.113.7"


@pytest.mark.parametrize("headers,scheme", [
    ("X-Forwarded-Proto: https\r\n", "https"),
    ("X-Forwarded-Proto: http\r\n", "http"),
    ("X-Scheme: https\r\n", "https"),  # added by secure_scheme_headers
    ("X-Forwarded-Ssl: on\r\n", "http"),  # gunicorn's default, not in this server's dict
    ("", "http"),
])
def test_scheme_from_secure_scheme_headers(trusting, headers, scheme):
    assert environ_of(trusting, headers)["wsgi.url_scheme"] == scheme


def test_contradicting_scheme_headers_get_400(trusting):
    with Conn(trusting) as conn:
        answer = conn.get("/environ_dump", headers="X-Forwarded-Proto: https\r\nX-Scheme: http\r\n")
    assert answer.status == 400


def test_forwarded_header(trusting):
    environ = environ_of(trusting, 'Forwarded: for=198.51.100.17;proto=https;host="shop.example:8443", '
                                   "for=10.0.0.1;proto=http\r\n")
    assert environ["REMOTE_ADDR"] == "198.51.100.17"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTP_HOST"] == "shop.example:8443"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("shop.example", "8443")


def test_forwarded_ipv6_with_port_and_precedence_over_x_forwarded(trusting):
    environ = environ_of(trusting, 'Forwarded: For="[2001:db8:cafe::17]:4711"\r\n'
                                   "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8:cafe::17", "4711")
    assert environ["wsgi.url_scheme"] == "https"  # Forwarded has no proto: the scheme header counts


def test_forwarded_right_most_untrusted_element(trusting):
    environ = environ_of(trusting, "Forwarded: for=192.0.2.1;proto=http, for=203.0.113.9;proto=https, "
                                   "for=10.0.0.5;proto=http\r\n")
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert environ["wsgi.url_scheme"] == "https"


def test_malformed_forwarded_is_ignored(trusting):
    environ = environ_of(trusting, "Forwarded: for=192.0.2.1;;junk\r\n")
    assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_untrusted_peer_headers_are_ignored(untrusting):
    environ = environ_of(untrusting, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
                                     "Forwarded: for=198.51.100.17;proto=https;host=evil.example\r\n")
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == "test"


def test_untrusted_peer_asgi():
    with running([ASGI_APP, "-w", "1", "--forwarded-allow-ips", "10.9.9.9"], workers=1) as server:
        with Conn(server) as conn:
            headers = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
            scope = conn.get("/", headers=headers).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


# -- PROXY protocol (both workers) -------------------------------------------------------


APPS = {"wsgi": WSGI_APP, "asgi": ASGI_APP}


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def interface(request):
    return request.param


def client_of(server, interface: str, headers: str = "", prefix: bytes = b"") -> tuple[str, str]:
    """The client address and port the app was given (environ, or the ASGI scope)."""
    with Conn(server) as conn:
        conn.send(prefix)
        return answer_client(conn.get("/environ_dump", headers=headers), interface)


def answer_client(answer, interface: str) -> tuple[str, str]:
    assert answer.status == 200, answer
    seen = answer.json()
    if interface == "wsgi":
        return seen["REMOTE_ADDR"], seen["REMOTE_PORT"]
    return seen["client"][0], str(seen["client"][1])


@pytest.fixture(scope="module")
def proxy_auto(interface):
    with running([APPS[interface], "-w", "1", "--proxy-protocol", "auto"], workers=1) as server:
        yield server


@pytest.mark.parametrize("header,address,port", [
    (proxy_v1(), "192.0.2.10", "56324"),
    (proxy_v1("2001:db8::10", "2001:db8::1", 1, 443, family="TCP6"), "2001:db8::10", "1"),
    (proxy_v2(), "192.0.2.10", "56324"),
    (proxy_v2(tlvs=tlv(0x04, b"padding") + tlv(0x05, b"unique-id-1234")), "192.0.2.10", "56324"),
    (proxy_v2("2001:db8::10", "2001:db8::1", 65535), "2001:db8::10", "65535"),
    (proxy_v2(command=0), "127.0.0.1", None),  # LOCAL: the proxy's own health check
    (b"PROXY UNKNOWN\r\n", "127.0.0.1", None),
    (b"", "127.0.0.1", None),  # auto: no header at all
], ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tlvs", "v2-tcp6", "v2-local", "v1-unknown", "none"])
def test_proxy_header_gives_the_client_address(proxy_auto, interface, header, address, port):
    seen_address, seen_port = client_of(proxy_auto, interface, prefix=header)
    assert seen_address == address
    if port is not None:
        assert seen_port == port


def test_proxy_header_byte_by_byte_and_keep_alive(proxy_auto, interface):
    """A header that trickles in is still read exactly; later requests keep its address."""
    with Conn(proxy_auto) as conn:
        for byte in proxy_v2():
            conn.send(bytes([byte]))
        assert answer_client(conn.get("/environ_dump"), interface)[0] == "192.0.2.10"
        assert answer_client(conn.get("/environ_dump"), interface)[0] == "192.0.2.10"


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.10 198.51.100.1 70000 443\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.1 1 443\r\n",
    b"PROXY TCP5 192.0.2.10 198.51.100.1 1 443\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1\r\n",
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 443\n",
    b"PROXY " + b"9" * 120 + b"\r\n",
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # address block too short
])
def test_malformed_proxy_header_gets_400_and_a_close(proxy_auto, header):
    workers = proxy_auto.workers()
    with Conn(proxy_auto) as conn:
        conn.send(header + b"GET /environ_dump HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = conn.response()
        assert answer.status == 400
        assert answer.headers["connection"] == "close"
        assert conn.rest() == b""
    assert proxy_auto.workers() == workers


def test_required_version_and_unlisted_peers(interface):
    app = APPS[interface]
    with running([app, "-w", "1", "--proxy-protocol", "v2"], workers=1) as v2_only:
        assert client_of(v2_only, interface, prefix=proxy_v2())[0] == "192.0.2.10"
        for prefix in (b"", proxy_v1()):  # missing, or the other version
            with Conn(v2_only) as conn:
                conn.send(prefix)
                assert conn.get("/environ_dump").status == 400
    with running([app, "-w", "1", "--proxy-protocol", "--proxy-allow-from", "10.9.9.9"],
                 workers=1) as not_allowed:
        assert client_of(not_allowed, interface)[0] == "127.0.0.1"
        with Conn(not_allowed) as conn:  # the header is not read: it is a bad request line
            conn.send(proxy_v1())
            assert conn.get("/environ_dump").status == 400


def test_proxy_header_address_decides_trust_for_forwarded_headers(proxy_auto, interface):
    """After a PROXY header the peer is its client, not in forwarded_allow_ips: its
    X-Forwarded-For does not count."""
    seen = client_of(proxy_auto, interface, "X-Forwarded-For: 203.0.113.7\r\n", prefix=proxy_v1())
    assert seen[0] == "192.0.2.10"


def test_proxy_header_before_tls(tmp_path, interface):
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    args = [APPS[interface], "-w", "1", "--proxy-protocol", "v1", "--certfile", str(pem)]
    with running(args, workers=1) as server:
        with Conn(server) as conn:
            conn.send(proxy_v1())
            conn.sock = context.wrap_socket(conn.sock, server_hostname="127.0.0.1")
            answer = conn.get("/environ_dump")
    assert answer_client(answer, interface)[0] == "192.0.2.10"
    seen = answer.json()
    assert (seen["wsgi.url_scheme"] if interface == "wsgi" else seen["scheme"]) == "https"
