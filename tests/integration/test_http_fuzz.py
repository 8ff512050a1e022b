"""Random and mutated requests against one real worker of each kind (hypothesis).

Three sources of bytes: requests built from parts that are each valid or
subtly not (methods, targets, versions, line ends, framing fields, chunk
lines), corpus files (tests/http_corpus) with random mutations, and plain
random bytes.  Each example is sent on a new connection that the client
then half-closes.  Whatever comes back must be well-formed responses: 200
from the probe app for requests it served, and at most one refusal (a 4xx,
501 or 505 announcing the close) at the end; never a 500.  After each
example the same worker answers a normal request, and its log has no
traceback.
"""

from __future__ import annotations

import socket
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import ServerProcess, running
from tests.integration.test_http_corpus import CORPUS, HOST, WORKERS, exchange, has_host, seen

pytestmark = pytest.mark.http_path

SERVED, REFUSALS = 200, {400, 414, 431, 501, 505}


def _seeds() -> list[bytes]:
    """Every corpus file, and a copy with Host of each one that lacks it (more of them get served)."""
    seeds = []
    for path in sorted(CORPUS.glob("*/*.raw")):
        data = path.read_bytes()
        seeds.append(data)
        if not has_host(data) and b"\n" in data:
            line_end = data.index(b"\n") + 1
            seeds.append(data[:line_end] + HOST + data[line_end:])
    return seeds


SEEDS = _seeds()
# About 5 s in all on a loaded 2-core machine; the deadline (per example) is generous for CI.
FUZZ = settings(max_examples=400, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=list(WORKERS))
def server(request):
    """The WSGI worker, and the ASGI worker on each uvicorn protocol."""
    # Small limits, so that random requests reach them too.
    args = [*WORKERS[request.param], "-w", "1", "--threads", "2", "--limit-request-line", "256",
            "--limit-request-fields", "12", "--limit-request-field-size", "200"]
    with running(args, workers=1) as server:
        pid, _ = seen(server)
        server.fuzz_pid = pid  # type: ignore[attr-defined]  # the worker the module's tests expect
        yield server


def check_exchange(server: ServerProcess, data: bytes) -> None:
    mark = len(server.log())
    try:
        responses = exchange(server, data)
    except (ValueError, IndexError, AssertionError) as err:
        raise AssertionError(f"malformed response to {data!r}: {err}") from err
    statuses = [r.status for r in responses]
    assert all(status == SERVED for status in statuses[:-1]), statuses
    if statuses and statuses[-1] != SERVED:
        assert statuses[-1] in REFUSALS, statuses
        assert responses[-1].headers.get("connection") == "close"
    pid, records = seen(server)  # a normal request, answered by the same worker
    assert pid == server.fuzz_pid  # type: ignore[attr-defined]  # set by the fixture
    assert sum(r["complete"] for r in records) == statuses.count(SERVED)
    assert all(r["complete"] or "error" in r for r in records), records
    assert "Traceback" not in server.log()[mark:], server.log()[mark:]


# -- requests from parts ---------------------------------------------------------------------
# Each part is valid but once in a while (line ends, drawn often, more rarely),
# so that about half the requests are valid, and the faults come one or two at
# a time, where the checks have to find them.

TCHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PCHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%"


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any],
           one_in: int = 20) -> st.SearchStrategy[Any]:
    return st.integers(1, one_in).flatmap(lambda n: invalid if n == one_in else valid)


methods = mostly(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"HEAD"]),
    st.one_of(st.sampled_from([b"CONNECT", b"PRI", b"get", b"G\x00T", b"GET:", b""]),
              st.text(TCHARS, min_size=1, max_size=8).map(str.encode), st.binary(max_size=6)))
targets = mostly(
    st.text(PCHARS, max_size=24).map(lambda path: ("/" + path).encode()),
    st.one_of(st.sampled_from([b"*", b"http://t/x", b"HTTPS://t", b"ftp://t/", b"t:443", b"/a#b", b"a/b", b""]),
              st.binary(max_size=24).map(lambda path: b"/" + path)))
versions = mostly(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11", b""]))
line_ends = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n "]), 60)
separators = mostly(st.sampled_from([b": ", b":", b":\t"]), st.sampled_from([b" : ", b" ", b"", b":\r\n "]), 40)
fields = mostly(
    st.tuples(st.text(TCHARS, min_size=1, max_size=10).map(str.encode),
              st.text(string.printable[:-5], max_size=20).map(str.encode)),
    st.tuples(st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Content-Type", b"Expect",
                               b"X-Forwarded-Proto", b"X-Forwarded-Ssl", b"X_A", b" X", b"X "]),
              st.sampled_from([b"t", b"0", b"3", b"-1", b"3, 3", b"+3", b"chunked", b"gzip, chunked",
                               b"chunked, gzip", b"identity", b"100-continue", b"https", b"off", b"a\x00b",
                               b"a\x07b", b"a\x7fb", b"caf\xc3\xa9"])))
chunk_sizes = mostly(st.sampled_from([b"3", b"03", b"3;a=b", b'3;a="x y"']),
                     st.sampled_from([b"3 ", b" 3", b"-3", b"+3", b"0x3", b"", b"z", b"ffffffffffffffffffff",
                                      b"3;a=b\rc", b"2", b"4"]))
chunked_bodies = st.lists(st.tuples(chunk_sizes, line_ends), max_size=3).map(
    lambda chunks: b"".join(size + end + b"abc\r\n" for size, end in chunks) + b"0\r\n\r\n")


bad_lengths = st.sampled_from([b"3, 3", b"-1", b"+3", b"abc", b"", b"0x3", b"1e3", b"3\x00", b"\xb3",
                               b"99999999999999999999999"])
bad_codings = st.sampled_from([b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked, chunked", b"CHUNKED",
                               b"gzip", b", chunked", b"\xff, chunked", b"chunked;q=1", b""])


@st.composite
def framed_body(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Framing fields and a body: none, a length (maybe wrong), chunked, or both."""
    body = draw(st.binary(max_size=12))
    kind = draw(mostly(st.sampled_from(["none", "length", "chunked"]), st.sampled_from(["wrong-length", "both"]),
                       10))
    if kind == "none":
        return [], b""
    if kind in ("length", "wrong-length"):
        length = len(body) + (draw(st.sampled_from([-1, 1, 100])) if kind == "wrong-length" else 0)
        return [(b"Content-Length", draw(mostly(st.just(str(length).encode()), bad_lengths, 8)))], body
    chunked = draw(chunked_bodies)
    extra = [(b"Content-Length", str(len(chunked)).encode())] if kind == "both" else []
    return [(b"Transfer-Encoding", draw(mostly(st.just(b"chunked"), bad_codings, 8))), *extra], chunked


@st.composite
def built_request(draw: st.DrawFn) -> bytes:
    head = draw(methods) + b" " + draw(targets) + b" " + draw(versions) + draw(line_ends)
    framing, body = draw(framed_body())
    host = [(b"Host", b"t")] if draw(mostly(st.just(True), st.just(False))) else []
    field_list = draw(st.permutations(host + framing + draw(st.lists(fields, max_size=4))))
    for name, value in field_list:
        head += name + draw(separators) + value + draw(line_ends)
    return head + draw(line_ends) + body


@st.composite
def pipelined(draw: st.DrawFn) -> bytes:
    return b"".join(draw(st.lists(built_request(), min_size=1, max_size=3)))


# -- mutated corpus files -------------------------------------------------------------------


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "bare-lf", "truncate"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=8), line_ends, chunk_sizes))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        elif kind == "bare-lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(1, 3))))
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


# -- the tests ---------------------------------------------------------------------------------


@settings(FUZZ, max_examples=600)
@given(data=pipelined())
def test_built_requests(server, data):
    check_exchange(server, data)


@FUZZ
@given(data=mutated_seed())
def test_mutated_corpus(server, data):
    check_exchange(server, data)


@settings(FUZZ, max_examples=200)
@given(data=st.binary(max_size=200))
def test_random_bytes(server, data):
    check_exchange(server, data)


def test_worker_survived_it_all(server):
    """Run last in the module (and after the fuzz tests when run alone): same pid, still serving."""
    with server.connect() as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(12) == b"HTTP/1.1 200"
    assert server.workers() == [server.fuzz_pid]  # type: ignore[attr-defined]  # set by the fixture

