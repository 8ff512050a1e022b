"""Reading Forwarded (RFC 7239) and picking the client from a hop list."""

from __future__ import annotations

import pytest

from clusterserve.http.forwarded import parse_forwarded, pick_client, split_host_port


def test_parse_forwarded_elements_pairs_and_quotes():
    value = 'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711";host="a\\"b"'
    assert parse_forwarded(value) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711", "host": 'a"b'},
    ]


@pytest.mark.parametrize("value", ["for", "for=1;;x=2", "=1", 'for="unterminated', "for=1 2"])
def test_malformed_forwarded(value):
    assert parse_forwarded(value) is None


@pytest.mark.parametrize("value,expected", [
    ("192.0.2.1", ("192.0.2.1", 0)), ("192.0.2.1:80", ("192.0.2.1", 80)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)), ("[2001:db8::1]", ("2001:db8::1", 0)),
    ("2001:db8::1", ("2001:db8::1", 0)), ("unknown", ("unknown", 0)), ("_hidden:x", ("_hidden:x", 0)),
])
def test_split_host_port(value, expected):
    assert split_host_port(value) == expected


def test_pick_client_is_the_right_most_untrusted_hop():
    trusted = {"10.0.0.1", "10.0.0.2"}.__contains__
    assert pick_client(["1.1.1.1", "2.2.2.2", "10.0.0.1"], trusted) == 1
    assert pick_client(["10.0.0.2", "10.0.0.1"], trusted) == 0
    assert pick_client(["10.0.0.1", "", "10.0.0.2"], lambda host: bool(host) and trusted(host)) == 1
