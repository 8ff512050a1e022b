"""PROXY header framing and parsing, on bytes (the integration tests send them to a worker)."""

from __future__ import annotations

import pytest

from clusterserve.http.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyInfo,
    header_length,
    parse_header,
)

V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


@pytest.mark.parametrize("data,mode,length", [
    (V1 + b"GET / HTTP/1.1\r\n", "auto", len(V1)),
    (V1, "v1", len(V1)),
    (V1[:5], "auto", None),  # "PROXY" without its space: cannot tell yet
    (V1[:20], "v1", None),  # no CRLF yet
    (V2_LOCAL + b"GET", "auto", 16),
    (V2_SIGNATURE[:7], "auto", None),
    (V2_SIGNATURE + b"\x21\x11\x00\x0c", "v2", 28),  # the length is known before the body came
    (b"GET / HTTP/1.1\r\n", "auto", 0),
    (b"PROPFIND / HTTP/1.1\r\n", "auto", 0),  # shares "PRO" with the v1 prefix
    (b"\x16\x03\x01", "auto", 0),  # a TLS ClientHello
])
def test_header_length(data, mode, length):
    assert header_length(data, mode) == length


@pytest.mark.parametrize("data,mode", [
    (b"GET / HTTP/1.1\r\n", "v1"),
    (V1, "v2"),
    (V2_LOCAL, "v1"),
    (b"PROXY " + b"1" * 110, "v1"),  # no CRLF within 107 bytes
    (b"PROXY TCP4 1.2.3.4\n", "auto"),  # bare LF
])
def test_header_length_refuses(data, mode):
    with pytest.raises(ProxyHeaderError):
        header_length(data, mode)


def test_parse_v1_and_v2():
    assert parse_header(V1) == ProxyInfo(("192.0.2.10", 56324), ("198.51.100.1", 443))
    assert parse_header(b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n") == ProxyInfo()
    assert parse_header(V2_LOCAL) == ProxyInfo()
    v2 = V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 10, 198, 51, 100, 1]) + b"\x00\x50\x01\xbb"
    assert parse_header(v2) == ProxyInfo(("192.0.2.10", 80), ("198.51.100.1", 443))


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.10 198.51.100.1 056324 443\r\n",  # leading zero
    b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",
    b"PROXY TCP6 192.0.2.10 198.51.100.1 1 443\r\n",  # IPv4 addresses under TCP6
    b"PROXY TCP4  192.0.2.10 198.51.100.1 1 443\r\n",  # two spaces
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
])
def test_parse_refuses(header):
    with pytest.raises(ProxyHeaderError):
        parse_header(header)
