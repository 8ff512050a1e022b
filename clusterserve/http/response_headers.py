"""What an app may put in its response's status line and header fields.

Strict with clients, tolerant with apps, as gunicorn is: a header name must
be a token and a value must consist wholly of visible characters, spaces and
tabs; only then are the value's leading and trailing spaces and tabs
removed (RFC 9110 section 5.5).  Django, for one, sends ``Set-Cookie`` values
that start with a space.  A bare ``strip()`` would also remove CR, LF, VT,
NEL and NBSP, and so turn an injection into a served value: anything outside
the allowed characters is refused instead, and the app's response becomes a
500.  One rule for both interfaces: the WSGI ``Response`` applies it as text,
the ASGI worker (``HeaderRuleMiddleware``) as bytes.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Any

from clusterserve.http.head_checks import TOKEN
from clusterserve.logs import log
from clusterserve.second_cache import SecondCache

_TOKEN = TOKEN.decode("ascii")  # the grammar request heads are checked with
_VALUE = r"[ \t\x21-\x7e\x80-\xff]*"
_STATUS = re.compile(rf"[0-9]{{3}}(?: {_VALUE})?")  # the reason phrase may be left out
_NAME_TEXT = re.compile(_TOKEN)
_VALUE_TEXT = re.compile(_VALUE)
_NAME_BYTES = re.compile(_TOKEN.encode())
_VALUE_BYTES = re.compile(_VALUE.encode("latin-1"))
_SURROUNDING = " \t"

SERVER_HEADER = (b"server", b"clusterserve")
# The Date header's value, formatted once a second.
http_date = SecondCache(lambda second: formatdate(second, usegmt=True).encode("ascii"))


class InvalidResponseHeader(ValueError):
    """An app's header field that cannot be sent; the message names the field, not its value
    (which may be a secret)."""


def _refuse_value(name: str, position: int, character: str | bytes) -> InvalidResponseHeader:
    return InvalidResponseHeader(
        f"response header {name!r}: character {character!r} at {position} is not allowed "
        "in a header value (visible characters, spaces and tabs only)")


def clean_header(name: Any, value: Any) -> str:
    """The value to send for one ``(name, value)`` of a WSGI app's ``start_response``."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header names and values must be str, got {type(name).__name__} "
                        f"and {type(value).__name__} for {name!r}")
    if not _NAME_TEXT.fullmatch(name):
        raise InvalidResponseHeader(f"response header name {name!r} is not a token")
    allowed = _VALUE_TEXT.match(value)
    end = allowed.end() if allowed else 0
    if end != len(value):
        raise _refuse_value(name, end, value[end])
    return value.strip(_SURROUNDING)


def clean_header_bytes(name: bytes, value: bytes) -> bytes:
    """The value to send for one header of an ASGI app's ``http.response.start``."""
    if not _NAME_BYTES.fullmatch(name):
        raise InvalidResponseHeader(f"response header name {name.decode('latin-1')!r} is not a token")
    allowed = _VALUE_BYTES.match(value)
    end = allowed.end() if allowed else 0
    if end != len(value):
        raise _refuse_value(name.decode("latin-1"), end, value[end:end + 1])
    return value.strip(b" \t")


def check_status(status: Any) -> None:
    """A WSGI status: three digits, then a space and a reason phrase, which may be left out."""
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise ValueError(f"status must be a str like '200 OK', got {status!r}")


class HeaderRuleMiddleware:
    """Applies the rule to an ASGI app's response headers before uvicorn's protocol sees them,
    and adds ``Date`` and ``Server`` unless the app sent its own.

    uvicorn's h11 protocol would refuse a value with surrounding spaces and
    send nothing at all; its httptools protocol would pass the spaces on.  A
    response with a refused header is answered 500 here, with one log line
    that names the header; what the app sends after it is dropped.
    """

    def __init__(self, app: Any, *, server_header: bool, date_header: bool) -> None:
        self.app = app
        self.server_header = server_header
        self.date_header = date_header

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def send_clean(message: Any) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                try:
                    headers = self._cleaned(message.get("headers", ()))
                except (InvalidResponseHeader, TypeError) as err:
                    refused = True
                    log.error("%s %s: %s; answered 500", scope.get("method"), scope.get("path"), err)
                    await send({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                            (b"content-length", b"22"), (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": b"Internal Server Error\n"})
                    return
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_clean)

    def _cleaned(self, headers: Any) -> list[tuple[bytes, bytes]]:
        cleaned = []
        has_date = has_server = False
        for name, value in headers:
            name = bytes(name)
            cleaned.append((name, clean_header_bytes(name, bytes(value))))
            lower = name.lower()
            has_date = has_date or lower == b"date"
            has_server = has_server or lower == b"server"
        if self.date_header and not has_date:
            cleaned.append((b"date", http_date(time.time())))
        if self.server_header and not has_server:
            cleaned.append(SERVER_HEADER)
        return cleaned
