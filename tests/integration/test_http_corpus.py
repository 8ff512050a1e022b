"""The HTTP/1.1 request corpus (tests/http_corpus, from gunicorn) against a real worker.

One test per corpus file, driven by its manifest.json: the file's bytes go
to a real server (one worker, one app thread) running tests.apps.http_probe,
an app that records every request it is handed: the WSGI worker, and the
ASGI worker on each of uvicorn's protocols (h11 and httptools), which must
refuse and serve exactly what the WSGI worker does.  The server for a case has
the limits its ``settings`` ask for; cases with the same settings share one.

- An invalid case gets a refusal (400, or 414/431/501/505 as fits) that
  announces the close, and the app never sees it, except where the error is
  in a body the app was already reading: then its ``wsgi.input`` read fails.
- A valid case is served: the app sees each request as the manifest says
  (method, target, version, headers as the environ has them, body length).

Where clusterserve answers differently from gunicorn, the tables below say
what it does instead and why (docs/http.md has the same list), and the
test checks that answer.  HTTP/1.1 without ``Host`` is refused with 400
(RFC 9112 section 3.2); a case that lacks it is also sent again with a
``Host`` added, so that what it is really about is still tested.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import ServerProcess, running
from tests.integration.test_wsgi_http import Conn

pytestmark = pytest.mark.http_path

CORPUS = Path(__file__).resolve().parent.parent / "http_corpus"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())
# The servers under test: the WSGI worker, and the ASGI worker on each uvicorn protocol.
WORKERS = {
    "wsgi": ["tests.apps.http_probe:app"],
    "asgi-h11": ["tests.apps.http_probe:asgi_app", "--http", "h11"],
    "asgi-httptools": ["tests.apps.http_probe:asgi_app", "--http", "httptools"],
}
HOST = b"Host: corpus\r\n"

# Settings clusterserve has, as command-line options.
OPTIONS = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field-size",
    "forwarded_allow_ips": "--forwarded-allow-ips",
    "proxy_protocol": "--proxy-protocol",
    "header_map": "--header-map",
}

# Cases that need a setting clusterserve does not have: not run.
SKIPPED = {
    "invalid/013.raw": "permit_obsolete_folding: obsolete folding is always refused (obs_fold_01)",
    "valid/028.raw": "strip_header_spaces: space before ':' is refused (RFC 9112 5.1, invalid/020)",
    "valid/031compat.raw": "permit_unconventional_http_method / casefold_http_method: "
                           "methods are RFC 9110 tokens, case-sensitive",
    "valid/031compat2.raw": "permit_unconventional_http_method: methods are RFC 9110 tokens",
    "valid/compat_obs_fold.raw": "permit_obsolete_folding: obsolete folding is always refused",
    "valid/compat_obs_fold_huge.raw": "permit_obsolete_folding: obsolete folding is always refused",
}

# Valid for gunicorn, refused here (once Host is there): status and reason.
REFUSED = {
    "valid/009.raw": (400, "Content-Length with Transfer-Encoding: refused as smuggling (RFC 9112 6.1)"),
    "valid/025.raw": (501, "gzip transfer coding: not decoded, so not accepted"),
    "valid/025_line.raw": (501, "gzip transfer coding: not decoded, so not accepted"),
    "valid/029.raw": (501, "identity is not a transfer coding in RFC 9112"),
    "valid/030.raw": (501, "identity is not a transfer coding in RFC 9112"),
    "valid/rfc9112_smuggle_gzip_chunked_01.raw": (501, "gzip transfer coding: not decoded"),
    "valid/rfc9112_smuggle_te_identity_chunked_01.raw": (501, "identity is not a transfer coding"),
    "valid/027.raw": (400, "non-ASCII bytes in the target: not a URI (RFC 9112 3.2, h11)"),
    "valid/rfc9112_target_authority_connect_01.raw": (501, "CONNECT: a WSGI app cannot tunnel"),
    "valid/rfc9112_target_authority_ipv6_01.raw": (501, "CONNECT: a WSGI app cannot tunnel"),
}

# Invalid for gunicorn, served here (once Host is there), and why.
ACCEPTED = {
    "invalid/003c.raw": "'-bl' is an RFC 9110 token; gunicorn refuses lower-case methods",
}

# Valid, but the body on file is shorter than its Content-Length: the app
# reads what there is, then wsgi.input fails when the client closes, and 400.
TRUNCATED = {"valid/099.raw": "17914 bytes announced, 8599 sent"}

# Invalid cases whose error is in the body: the head is fine, so the app may
# be called; it never gets the body (its read fails) and the client a 400.
BODY_ERRORS = {
    "invalid/chunked_01.raw", "invalid/chunked_09.raw", "invalid/chunked_10.raw",
    "invalid/chunked_11.raw", "invalid/chunked_12.raw", "invalid/chunked_13.raw",
    "invalid/chunked_14.raw", "invalid/rfc9110_trailer_forbidden_cl_01.raw",
    "invalid/rfc9110_trailer_forbidden_host_01.raw", "invalid/rfc9110_trailer_forbidden_te_01.raw",
    "invalid/rfc9112_chunked_missing_final_crlf_01.raw",
    "invalid/rfc9112_chunked_size_minus_sign_01.raw", "invalid/rfc9112_chunked_size_plus_sign_01.raw",
}

# The refusal that fits each kind of gunicorn error; 400 for the others.
STATUS_FOR_ERROR = {
    "LimitRequestLine": {414},
    "LimitRequestHeaders": {431},
    "InvalidHTTPVersion": {400, 505},
}
REFUSALS = {400, 414, 431, 501, 505}


# -- servers -----------------------------------------------------------------------------


def settings_key(case: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(case.get("settings", {}).items()))


class Servers:
    """One server per distinct settings, started on first use, stopped with the module."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._running: dict[tuple[tuple[str, Any], ...], Any] = {}

    def get(self, case: dict[str, Any]) -> ServerProcess:
        key = settings_key(case)
        if key not in self._running:
            args = [*WORKERS[self.worker], "-w", "1", "--threads", "1"]
            for name, value in key:
                args += [OPTIONS[name], str(value)]
            context = running(args, workers=1)
            self._running[key] = (context, context.__enter__())
        return self._running[key][1]

    def stop(self) -> None:
        for context, _ in self._running.values():
            context.__exit__(None, None, None)


@pytest.fixture(scope="module", params=list(WORKERS))
def servers(request):
    pool = Servers(request.param)
    yield pool
    pool.stop()


# -- talking to the probe ---------------------------------------------------------------


def exchange(server: ServerProcess, data: bytes) -> list[Any]:
    """Send ``data``, close our side, and read every response until the server closes."""
    responses = []
    with Conn(server) as conn:
        conn.send(data)
        conn.sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                responses.append(conn.response())
            except (EOFError, ConnectionResetError):
                return responses


def seen(server: ServerProcess) -> tuple[int, list[dict[str, Any]]]:
    """The worker's pid and what the app was handed since the last call."""
    with Conn(server) as conn:
        # The shortest Host: every case's limits let it through (invalid/010 allows 10 bytes).
        conn.send(b"GET /__probe/seen HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = conn.response().json()
    return answer["pid"], answer["seen"]


def has_host(data: bytes) -> bool:
    return re.search(rb"\nhost[ \t]*:", data, re.IGNORECASE) is not None


def host_missing(data: bytes) -> bool:
    """An HTTP/1.1 request line and no Host: refused with 400 whatever else is wrong."""
    return not has_host(data) and data.split(b"\n", 1)[0].rstrip().endswith(b"HTTP/1.1")


def target_seen(target: str, worker: str) -> str:
    """The request target as the app gets it: raw in the environ; as path and query in an
    ASGI scope, which uvicorn's h11 protocol splits at the first "?" and its httptools
    protocol parses as a URL (fragment dropped, path only from an absolute form)."""
    if worker == "wsgi":
        return target
    if worker == "asgi-h11":
        path, _, query = target.partition("?")
    elif target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
    else:
        parts = urlsplit(target)
        path, query = parts.path, parts.query
    return path + ("?" + query if query else "")


def as_seen(request: dict[str, Any], *, complete: bool = True, header_map: str = "drop",
            worker: str = "wsgi") -> dict[str, Any]:
    """A manifest request as the app sees it (the headers by their environ keys)."""
    headers: dict[str, str] = {}
    for name, value in request["headers"]:
        if "_" in name and header_map == "drop":
            continue  # dropped, gunicorn's default header_map
        key = name if name in ("CONTENT-TYPE", "CONTENT-LENGTH") else "HTTP_" + name
        key = key.replace("-", "_")
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    major, minor = request["version"]
    return {"method": request["method"], "target": target_seen(request["target"], worker),
            "version": f"HTTP/{major}.{minor}",
            "headers": headers, "body_len": request["body_len"], "complete": complete}


def with_host(data: bytes, requests: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """Add ``Host`` to each HTTP/1.1 request that lacks it, in the bytes and the manifest."""
    out, pos, changed = bytearray(), 0, []
    for request in requests:
        line = f"{request['method']} {request['target']} HTTP/{request['version'][0]}.{request['version'][1]}"
        start = data.index(line.encode("latin-1") + b"\r\n", pos)
        end = start + len(line) + 2
        out += data[pos:end]
        pos = end
        names = {name for name, _ in request["headers"]}
        if request["version"] == [1, 1] and "HOST" not in names:
            out += HOST
            request = {**request, "headers": [["HOST", "corpus"], *request["headers"]]}
        changed.append(request)
    return bytes(out + data[pos:]), changed


def expected(name: str, requests: list[dict[str, Any]], header_map: str = "drop",
             worker: str = "wsgi") -> tuple[list[dict[str, Any]], int | None]:
    """What the app sees and the refusal that ends the exchange (None: all served)."""
    served = []
    for request in requests:
        if name in REFUSED:  # the worker's own checks come before h11's for Host
            return served, REFUSED[name][0]
        names = {header for header, _ in request["headers"]}
        if request["version"] == [1, 1] and "HOST" not in names:
            return served, 400
        if name in TRUNCATED:
            return [*served, as_seen(request, complete=False, worker=worker)], 400
        served.append(as_seen(request, header_map=header_map, worker=worker))
        if request["version"] == [1, 0]:
            break  # h11 closes HTTP/1.0 connections after the response
    return served, None


# -- the tests -------------------------------------------------------------------------------


def case_id(case: dict[str, Any]) -> str:
    return case["name"].removesuffix(".raw")


def test_every_case_is_listed_once():
    """The tables name real cases, and every case needing a missing setting is skipped."""
    names = {case["name"] for case in CASES}
    tables = [set(SKIPPED), set(REFUSED), set(ACCEPTED), set(TRUNCATED), BODY_ERRORS]
    assert all(table <= names for table in tables)
    unsupported = {case["name"] for case in CASES if set(case.get("settings", {})) - set(OPTIONS)}
    assert unsupported == set(SKIPPED)
    assert len(CASES) == 137


def assert_refused(responses: list[Any], statuses: set[int]) -> None:
    assert responses, "no response before the close"
    refusal = responses[-1]
    assert refusal.status in statuses, (refusal.status, refusal.body)
    assert refusal.headers.get("connection") == "close"


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "invalid"], ids=case_id)
def test_invalid(case, servers):
    name = case["name"]
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    server = servers.get(case)
    pid, _ = seen(server)
    data = (CORPUS / name).read_bytes()
    variants = [data]
    if not has_host(data):
        line_end = data.find(b"\n") + 1
        variants.append(data[:line_end] + HOST + data[line_end:])
    for variant in variants:
        responses = exchange(server, variant)
        worker, records = seen(server)
        assert worker == pid
        if name in ACCEPTED and not host_missing(variant):
            assert [r.status for r in responses] == [200]
            assert [r["complete"] for r in records] == [True]
            continue
        allowed = STATUS_FOR_ERROR.get(case["error"], {400})
        if host_missing(variant):
            allowed = allowed | {400}  # h11's check for Host may come first
        assert len(responses) == 1
        assert_refused(responses, allowed)
        if name in BODY_ERRORS:
            assert all(not r["complete"] and "error" in r for r in records), records
        else:
            assert records == [], "the app was handed a request it should never see"


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "valid"], ids=case_id)
def test_valid(case, servers):
    name = case["name"]
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    server = servers.get(case)
    pid, _ = seen(server)
    data = (CORPUS / name).read_bytes()
    variants = [(data, case["requests"])]
    hosted = with_host(data, case["requests"])
    if hosted[0] != data:
        variants.append(hosted)
    for variant, requests in variants:
        served, refusal = expected(name, requests, case.get("settings", {}).get("header_map", "drop"),
                                   servers.worker)
        responses = exchange(server, variant)
        worker, records = seen(server)
        assert worker == pid
        assert all("error" in r for r in records if not r["complete"]), records
        assert [{k: v for k, v in r.items() if k != "error"} for r in records] == served
        complete = sum(r["complete"] for r in served)
        assert [r.status for r in responses] == [200] * complete + ([refusal] if refusal else [])
        if refusal:
            assert_refused(responses, {refusal})


# -- the worker's own checks (clusterserve/http/head_checks.py), one request each ----------


def get(head: str, version: str = "HTTP/1.1") -> bytes:
    return f"GET / {version}\r\nHost: t\r\n{head}\r\n".encode("latin-1")


def post(head: str, body: str) -> bytes:
    return f"POST / HTTP/1.1\r\nHost: t\r\n{head}\r\n{body}".encode("latin-1")


CHUNKED = "Transfer-Encoding: chunked\r\n"
HEAD_CHECKS = {
    "characters-bare-lf-line-ends": (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    "characters-bare-lf-one-line": (b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400),
    "characters-bare-cr": (get("X: a\rb\r\n"), 400),
    "characters-nul-in-value": (get("X: a\0b\r\n"), 400),
    "characters-bel-in-value": (get("X: a\x07b\r\n"), 400),
    "characters-del-in-value": (get("X: a\x7fb\r\n"), 400),
    "no-folding": (get("X: a\r\n b\r\n"), 400),
    "request-line-two-spaces": (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "version-2.0": (get("", "HTTP/2.0"), 505),
    "version-pri-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "version-1.2": (get("", "HTTP/1.2"), 505),
    "version-malformed": (get("", "HTTP/1.10"), 400),
    "method-connect": (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501),
    "target-asterisk-not-options": (b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "target-authority-form": (b"GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "target-other-scheme": (b"GET ftp://t/x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "target-relative": (b"GET a/b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "content-length-list": (post("Content-Length: 3, 3\r\n", "abc"), 400),
    "content-length-twice-same": (post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"), 400),
    "content-length-sign": (post("Content-Length: +3\r\n", "abc"), 400),
    "content-type-twice": (get("Content-Type: a/b\r\nContent-Type: c/d\r\n"), 400),
    "transfer-coding-with-length": (post("Content-Length: 3\r\n" + CHUNKED, "3\r\nabc\r\n0\r\n\r\n"), 400),
    "transfer-coding-on-http-1.0": (b"POST / HTTP/1.0\r\n" + CHUNKED.encode() + b"\r\n0\r\n\r\n", 400),
    "transfer-coding-chunked-not-last": (post("Transfer-Encoding: chunked, gzip\r\n", ""), 400),
    "transfer-coding-chunked-twice": (post(CHUNKED + CHUNKED, "0\r\n\r\n"), 400),
    "transfer-coding-identity-alone": (post("Transfer-Encoding: identity\r\n", "abc"), 400),
    "transfer-coding-unknown": (post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501),
}
BODY_CHECKS = {
    "chunk-size-then-space": post(CHUNKED, "3 \r\nabc\r\n0\r\n\r\n"),
    "chunk-size-hex-prefix": post(CHUNKED, "0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk-extension-bare-cr": post(CHUNKED, "3;a=b\rc\r\nabc\r\n0\r\n\r\n"),
    "chunk-line-bare-lf": post(CHUNKED, "3\nabc\r\n0\r\n\r\n"),
    "chunk-data-longer-than-size": post(CHUNKED, "2\r\nabc\r\n0\r\n\r\n"),
    "trailer-folding": post(CHUNKED, "0\r\nX: a\r\n b\r\n\r\n"),
    "trailer-control-character": post(CHUNKED, "0\r\nX: a\x01b\r\n\r\n"),
    "trailer-content-length": post(CHUNKED, "0\r\nContent-Length: 5\r\n\r\n"),
    "trailer-host": post(CHUNKED, "0\r\nHost: evil\r\n\r\n"),
}
ACCEPTED_FORMS = {
    "options-asterisk": b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    "absolute-form": b"GET HTTP://t/x?y HTTP/1.1\r\nHost: t\r\n\r\n",
    "fragment": b"GET /x?y#z HTTP/1.1\r\nHost: t\r\n\r\n",
    "chunk-extensions": post(CHUNKED, '3;a = "b;\\"c" ;d\r\nabc\r\n0\r\nX-Trailer: ok\r\n\r\n'),
    "http-1.0-length": b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
}
DEFAULTS: dict[str, Any] = {"name": "checks"}


@pytest.mark.parametrize("data, status", HEAD_CHECKS.values(), ids=HEAD_CHECKS)
def test_head_check_refuses(servers, data, status):
    server = servers.get(DEFAULTS)
    pid, _ = seen(server)
    responses = exchange(server, data)
    assert_refused(responses, {status})
    assert seen(server) == (pid, [])


@pytest.mark.parametrize("data", BODY_CHECKS.values(), ids=BODY_CHECKS)
def test_chunked_body_check_refuses(servers, data):
    """Caught with the head when the body came with it; else when the app reads it."""
    server = servers.get(DEFAULTS)
    pid, _ = seen(server)
    assert_refused(exchange(server, data), {400})
    worker, records = seen(server)
    assert worker == pid
    assert all(not r["complete"] and "error" in r for r in records)


def test_chunked_body_check_while_the_app_reads(servers):
    """A bad chunk line after the app has started reading: its read fails, and 400."""
    server = servers.get(DEFAULTS)
    with Conn(server) as conn:
        conn.send(post(CHUNKED, "3\r\nabc\r\n"))
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.sock.recv(1)  # the app is waiting for the rest of the body
        conn.sock.settimeout(5)
        conn.send(b"3 \r\ndef\r\n0\r\n\r\n")
        assert_refused([conn.response()], {400})
    [record] = seen(server)[1]
    assert (record["complete"], record["body_len"]) == (False, 3)
    # The WSGI app's read raises; an ASGI app learns only that the request has ended.
    assert ("chunk size" if servers.worker == "wsgi" else "http.disconnect") in record["error"]


@pytest.mark.parametrize("data", ACCEPTED_FORMS.values(), ids=ACCEPTED_FORMS)
def test_head_check_accepts(servers, data):
    server = servers.get(DEFAULTS)
    seen(server)
    assert [r.status for r in exchange(server, data)] == [200]
    [record] = seen(server)[1]
    assert record["complete"]


ZERO_LIMITS = {"name": "zero-limits", "settings": {"limit_request_line": 0, "limit_request_field_size": 0}}


@pytest.mark.parametrize("data, status", [
    (f"GET /{'a' * (8190 - 14)} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 200),
    (f"GET /{'a' * (8191 - 14)} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 414),
    (get(f"X: {'y' * (8188 - 3)}\r\n"), 200),
    (get(f"X: {'y' * (8189 - 3)}\r\n"), 431),
], ids=["line-8190", "line-8191", "field-8190", "field-8191"])
def test_limit_zero_means_gunicorns_ceiling(servers, data, status):
    """0 is not "unlimited": it is gunicorn's maximum, 8190 bytes, for the line and for a
    field line with its CRLF."""
    server = servers.get(ZERO_LIMITS)
    assert [r.status for r in exchange(server, data)] == [status]
