"""The HTTP/1.1 codec of one connection: bytes in, requests out; responses in, bytes out.

A connection's codec follows one request and its response at a time, with
the rules of a server: which body a request has, whether the connection
stays open, how a response is framed.  Two codecs keep the same rules:

- ``H11Codec`` (``--http h11``, the default), h11's state machine;
- ``HttptoolsCodec`` (``--http httptools``), heads parsed by llhttp in C
  and bodies and responses framed here, for about a quarter less CPU per
  request.

Both see a head only after ``check_head`` accepted its raw bytes, so both
refuse the same requests; the conformance corpus runs against each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Protocol

from clusterserve.http.errors import HttpError


class Marker(enum.Enum):
    """What ``next_body`` returns instead of bytes: an enum, so that ``is END`` narrows the type."""

    NEED_DATA = "NEED_DATA"
    END = "END"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Marker.NEED_DATA  # next_body: no more body bytes until more arrive
END: Final = Marker.END  # next_body: the whole body has been read


@dataclass(slots=True)
class RequestHead:
    """A request line and its header fields, names as the client wrote them."""

    method: bytes
    target: bytes
    http_version: bytes  # b"1.0" or b"1.1"
    headers: list[tuple[bytes, bytes]]


class Codec(Protocol):
    """What a connection asks of its codec (see the module docstring)."""

    def __init__(self, max_head: int) -> None:
        """A codec that refuses a request head longer than ``max_head`` bytes."""

    @property
    def pending(self) -> bytes:
        """Bytes received and not parsed yet: the next head, or a pipelined request."""

    @property
    def awaiting_head(self) -> bool:
        """The client's next message is a request head."""

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits for an answer before its body."""

    @property
    def reusable(self) -> bool:
        """The response is complete and the connection may carry another request."""

    @property
    def body_unread(self) -> bool:
        """The request's body has not been read to its end."""

    def receive(self, data: bytes) -> None:
        """The next bytes from the client; b"" when it closed its side."""

    def next_head(self) -> RequestHead | None:
        """The request head, or None until more bytes arrive.

        Raises ``HttpError`` to refuse it, ``ConnectionResetError`` when the
        client closed the connection between requests.
        """

    def next_body(self) -> bytes | Marker:
        """The next body bytes, ``NEED_DATA`` or ``END``.

        Raises ``HttpError`` for a malformed body or one the client cut short.
        """

    def continue_response(self) -> bytes:
        """``100 Continue``, which the client waits for before its body."""

    def response_head(self, status_code: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The response head, with the framing and ``Connection`` fields this response needs."""

    def response_body(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire (chunk-framed if need be)."""

    def response_passthrough(self, part: Any) -> list[Any]:
        """The wire parts around ``part`` (``len(part)`` body bytes that the caller writes itself)."""

    def response_end(self) -> bytes:
        """What ends the response on the wire."""

    def start_next_cycle(self) -> bool:
        """Get ready for the next request on this connection; False if it cannot carry one
        (a message is not done, or the connection must close)."""


def refusal(status: int, detail: str) -> HttpError:
    """An ``HttpError`` for a status a parser suggested (any non-4xx/5xx becomes 400)."""
    return HttpError(status if 400 <= status < 600 else 400, detail)
