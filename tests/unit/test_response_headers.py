"""The response-header rule, row by row, as text (WSGI) and as bytes (ASGI)."""

from __future__ import annotations

import pytest

from clusterserve.http.response_headers import (
    InvalidResponseHeader,
    check_status,
    clean_header,
    clean_header_bytes,
)

SERVED = [  # (value from the app, value sent)
    (" csrftoken=abc; Path=/", "csrftoken=abc; Path=/"),
    ("bar ", "bar"),
    ("\t v \t", "v"),
    ("a  b", "a  b"),
    ("", ""),
    ("   ", ""),
    ("caf\xe9", "caf\xe9"),
    ("a\xa0", "a\xa0"),  # NBSP is a value character; str.strip() would have removed it
    ("\x85a", "\x85a"),  # so is NEL
    ("~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"),
]
REFUSED = ["a\r\nSet-Cookie: x=1", "a\n", "\ra", "a\x0b", "a\x0c", "a\x00", "a\x7f", "a\x1b", "snow\u2603"]


@pytest.mark.parametrize(("value", "sent"), SERVED)
def test_allowed_values_lose_only_surrounding_spaces_and_tabs(value, sent):
    assert clean_header("X-Test", value) == sent


@pytest.mark.parametrize(("value", "sent"), [row for row in SERVED if max(row[0], default=" ") <= "\xff"])
def test_bytes_follow_the_same_rule(value, sent):
    assert clean_header_bytes(b"x-test", value.encode("latin-1")) == sent.encode("latin-1")


@pytest.mark.parametrize("value", REFUSED)
def test_control_characters_and_text_beyond_latin1_are_refused_naming_the_header(value):
    with pytest.raises(InvalidResponseHeader, match="'X-Test'"):
        clean_header("X-Test", value)


@pytest.mark.parametrize("value", [v for v in REFUSED if max(v) <= "\xff"])
def test_control_characters_are_refused_as_bytes(value):
    with pytest.raises(InvalidResponseHeader, match="'x-test'"):
        clean_header_bytes(b"x-test", value.encode("latin-1"))


def test_the_message_does_not_repeat_the_value():
    with pytest.raises(InvalidResponseHeader) as caught:
        clean_header("Authorization", "Bearer secret-token\r\n")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "X-Bad\r\n", "Caf\xe9", "(x)"])
def test_names_must_be_tokens(name):
    with pytest.raises(InvalidResponseHeader, match="is not a token"):
        clean_header(name, "v")
    if max(name, default="a") <= "\xff":
        with pytest.raises(InvalidResponseHeader, match="is not a token"):
            clean_header_bytes(name.encode("latin-1"), b"v")


def test_names_and_values_must_be_text():
    with pytest.raises(TypeError):
        clean_header(b"X-Test", "v")
    with pytest.raises(TypeError):
        clean_header("X-Test", b"v")


@pytest.mark.parametrize("status", ["200 OK", "200", "404 Not Found", "599 x", "200 ", "418 I'm a teapot"])
def test_statuses_as_gunicorn_accepts_them(status):
    check_status(status)


@pytest.mark.parametrize("status", ["20 OK", "2000 OK", "200OK", "OK 200", "200 OK\r\nX: y", b"200 OK", 200, ""])
def test_malformed_statuses_are_refused(status):
    with pytest.raises(ValueError):
        check_status(status)
