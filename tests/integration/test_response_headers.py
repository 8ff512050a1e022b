"""What apps send in their response heads, served as gunicorn serves it, on every worker.

The rule (``clusterserve.http.response_headers``): a header name is a
token; a value consists of visible characters, spaces and tabs, and only
then loses its surrounding spaces and tabs; anything else is a 500 with one
log line that names the header.  The WSGI cases run once per WSGI codec
(.ci/run runs this module again with ``--http httptools``); the ASGI cases
on both of uvicorn's protocols.
"""

from __future__ import annotations

import socket

import pytest

from tests.harness import running

pytestmark = pytest.mark.http_path

SERVED = {  # path -> (header name, value on the wire)
    "/leading-space": ("set-cookie", b"csrftoken=abc; Path=/; SameSite=Lax"),
    "/trailing-space": ("x-trailing", b"bar"),
    "/tabs": ("x-tabs", b"v"),
    "/inner-space": ("x-inner", b"a  b"),
    "/latin1": ("x-latin1", b"caf\xe9\xa0"),  # NBSP is a value character: kept, not stripped
    "/mixed-case": ("x-mixed-case", b"v"),
}
REFUSED = {  # path -> the header name the log line names
    "/crlf": "X-Injected", "/lf-only": "X-Injected", "/trailing-cr": "X-Injected",
    "/vertical-tab": "X-Vt", "/nul": "X-Nul", "/space-in-name": "X Bad",
}


def fetch(server, path: str) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """The status line, the header fields (names lower-cased) and the rest, over one connection."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = []
    for line in lines:
        name, _, value = line.partition(b":")
        fields.append((name.decode("latin-1").lower(), value.strip(b" ")))
    return status, fields, body


@pytest.fixture(scope="module", params=["wsgi", "asgi-h11", "asgi-httptools"])
def server(request):
    if request.param == "wsgi":
        args = ["tests.apps.response_cases:app"]
    else:
        args = ["tests.apps.response_cases:asgi_app", "--http", request.param.removeprefix("asgi-")]
    with running([*args, "-w", "1"], workers=1) as server:
        yield server


@pytest.mark.parametrize("path", sorted(SERVED))
def test_values_are_served_with_surrounding_spaces_and_tabs_removed(server, path):
    status, fields, body = fetch(server, path)
    assert status.startswith(b"HTTP/1.1 200")
    assert SERVED[path] in fields
    assert body == b"2\r\nok\r\n0\r\n\r\n"


@pytest.mark.parametrize("path", sorted(REFUSED))
def test_a_value_with_control_characters_or_a_bad_name_is_a_500_naming_the_header(server, path):
    mark = len(server.log())
    status, fields, body = fetch(server, path)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"evil" not in body and all(name != "set-cookie" for name, _ in fields)
    server.wait_for_log(rf"GET {path}: response header (name )?'{REFUSED[path]}'.*; answered 500",
                        after=mark)


def test_a_status_without_a_reason_phrase_is_served(server):
    status, fields, _ = fetch(server, "/no-reason")
    assert status in (b"HTTP/1.1 200 ", b"HTTP/1.1 200 OK")  # ASGI statuses are numbers only
    assert ("content-type", b"text/plain") in fields


def test_the_apps_own_date_and_server_are_not_doubled(server):
    _, fields, _ = fetch(server, "/own-date-and-server")
    assert [value for name, value in fields if name == "date"] == [b"Mon, 01 Jan 2001 00:00:00 GMT"]
    assert [value for name, value in fields if name == "server"] == [b"app/1"]


def test_date_and_server_are_added_once_when_the_app_sends_none(server):
    _, fields, _ = fetch(server, "/trailing-space")
    assert [value for name, value in fields if name == "server"] == [b"clusterserve"]
    assert len([name for name, _ in fields if name == "date"]) == 1


def test_transfer_encoding_from_the_app_frames_the_body_once(server):
    _, fields, body = fetch(server, "/app-chunked")
    assert [value for name, value in fields if name == "transfer-encoding"] == [b"chunked"]
    assert body == b"2\r\nok\r\n0\r\n\r\n"
