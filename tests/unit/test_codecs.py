"""Both HTTP codecs, byte for byte: the same requests in, the same responses out."""

import pytest

from clusterserve.http.codec import END, NEED_DATA
from clusterserve.http.errors import HttpError
from clusterserve.http.h11_codec import H11Codec
from clusterserve.http.httptools_codec import HttptoolsCodec

pytestmark = pytest.mark.timeout(10)

MAX_HEAD = 16384
GET = b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nX-Thing:  spaced \t\r\n\r\n"


@pytest.fixture(params=[H11Codec, HttptoolsCodec], ids=["h11", "httptools"])
def codec(request):
    return request.param(MAX_HEAD)


def body_of(codec):
    data = b""
    while (piece := codec.next_body()) not in (END, NEED_DATA):
        data += piece
    return data, piece


def respond(codec, status=200, headers=((b"Content-Length", b"2"),), body=b"ok"):
    wire = codec.response_head(status, b"OK", list(headers))
    wire += codec.response_body(body) if body else b""
    return wire + codec.response_end()


def test_a_head_is_parsed_with_trimmed_values(codec):
    codec.receive(GET)
    head = codec.next_head()
    assert (head.method, head.target, head.http_version) == (b"GET", b"/a?b=1", b"1.1")
    assert head.headers == [(b"Host", b"t"), (b"X-Thing", b"spaced")]


def test_a_partial_head_needs_more_bytes(codec):
    codec.receive(GET[:20])
    assert codec.next_head() is None
    codec.receive(GET[20:])
    assert codec.next_head().target == b"/a?b=1"


def test_a_head_that_arrives_a_byte_at_a_time(codec):
    for byte in GET[:-1]:
        codec.receive(bytes([byte]))
        assert codec.next_head() is None
    codec.receive(GET[-1:])
    assert codec.next_head().target == b"/a?b=1"


def test_any_token_is_a_method(codec):
    codec.receive(b"-BLARGH / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert codec.next_head().method == b"-BLARGH"


def test_keep_alive_response_and_a_pipelined_request(codec):
    codec.receive(GET + b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
    codec.next_head()
    assert body_of(codec) == (b"", END)
    assert respond(codec).startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert codec.reusable
    assert codec.start_next_cycle()
    assert codec.next_head().target == b"/second"


BODIES = {  # the head's framing field and first bytes, what they decode to, then the rest
    "content-length": (b"Content-Length: 10\r\n\r\nhello", b"hello", b"world", b"world"),
    "chunked": (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", b"hel",
                b"lo\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\n", b"lo world"),
}


@pytest.mark.parametrize("framing", BODIES)
def test_a_body_arrives_in_pieces_and_a_pipelined_request_follows(codec, framing):
    first, first_data, rest, rest_data = BODIES[framing]
    codec.receive(b"POST / HTTP/1.1\r\nHost: t\r\n" + first)
    codec.next_head()
    assert codec.body_unread
    assert body_of(codec) == (first_data, NEED_DATA)
    codec.receive(rest + GET)
    assert body_of(codec) == (rest_data, END)
    assert not codec.body_unread
    respond(codec)
    assert codec.start_next_cycle()
    assert codec.next_head().target == b"/a?b=1"


def test_a_malformed_chunk_is_refused(codec):
    codec.receive(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    codec.next_head()
    with pytest.raises(HttpError) as refused:
        codec.receive(b"5 \r\nhello\r\n0\r\n\r\n")
        body_of(codec)
    assert refused.value.status == 400


def test_a_body_cut_short_is_refused(codec):
    codec.receive(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
    codec.next_head()
    body_of(codec)
    codec.receive(b"")
    with pytest.raises(HttpError):
        body_of(codec)


def test_end_of_file_between_requests_and_inside_a_head(codec):
    codec.receive(b"")
    with pytest.raises(ConnectionResetError):
        codec.next_head()


def test_end_of_file_inside_a_head_is_refused(codec):
    codec.receive(b"GET / HTTP/1.1\r\nHo")
    codec.receive(b"")
    with pytest.raises(HttpError) as refused:
        codec.next_head()
    assert refused.value.status == 400


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
], ids=["no-host", "two-hosts"])
def test_host_rules(codec, head):
    codec.receive(head)
    with pytest.raises(HttpError) as refused:
        codec.next_head()
    assert refused.value.status == 400


def test_a_head_beyond_the_limit_is_431(codec):
    codec.receive(b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * MAX_HEAD)
    with pytest.raises(HttpError) as refused:
        codec.next_head()
    assert refused.value.status == 431


def test_100_continue(codec):
    codec.receive(b"PUT / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    codec.next_head()
    assert codec.expects_continue
    assert codec.continue_response().startswith(b"HTTP/1.1 100 ")
    assert not codec.expects_continue


def test_100_continue_is_ignored_on_http_1_0(codec):
    codec.receive(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    codec.next_head()
    assert not codec.expects_continue


def wire_of(codec_class, request, status=200, headers=(), body=b"hello"):
    codec = codec_class(MAX_HEAD)
    codec.receive(request)
    codec.next_head()
    body_of(codec)
    return respond(codec, status, headers, body), codec.reusable


RESPONSES = {
    "unknown-length-http-1.1": (GET, 200, ()),
    "unknown-length-http-1.0": (b"GET / HTTP/1.0\r\n\r\n", 200, ()),
    "length-http-1.0": (b"GET / HTTP/1.0\r\n\r\n", 200, ((b"Content-Length", b"5"),)),
    "head-unknown-length": (b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", 200, ()),
    "head-http-1.0": (b"HEAD / HTTP/1.0\r\n\r\n", 200, ()),
    "head-with-length": (b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", 200, ((b"Content-Length", b"5"),)),
    "no-content": (GET, 204, ()),
    "not-modified-with-length": (GET, 304, ((b"Content-Length", b"5"),)),
    "client-asks-to-close": (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200,
                             ((b"Content-Length", b"5"),)),
    "server-closes": (GET, 200, ((b"Content-Length", b"5"), (b"connection", b"close"))),
}


@pytest.mark.parametrize("request_bytes, status, headers", RESPONSES.values(), ids=RESPONSES.keys())
def test_responses_are_framed_as_h11_frames_them(request_bytes, status, headers):
    body = b"" if status in (204, 304) or request_bytes.startswith(b"HEAD") else b"hello"
    expected = wire_of(H11Codec, request_bytes, status, headers, body)
    assert wire_of(HttptoolsCodec, request_bytes, status, headers, body) == expected


def test_a_file_passes_through_with_chunk_framing_when_the_length_is_unknown(codec):
    codec.receive(GET)
    codec.next_head()
    codec.response_head(200, b"OK", [])
    parts = codec.response_passthrough(b"x" * 5)
    assert b"".join(bytes(part) for part in parts) == b"5\r\nxxxxx\r\n"
