"""``--http h11`` (the default): the codec is h11's state machine."""

from __future__ import annotations

from typing import Any

import h11

from clusterserve.http.codec import END, NEED_DATA, Marker, RequestHead, refusal
from clusterserve.http.head_checks import ChunkedBodyCheck

_CONTINUE = h11.InformationalResponse(status_code=100, headers=[])


class H11Codec:
    """h11 decodes a chunked body; ``ChunkedBodyCheck`` checks it alongside, more strictly."""

    def __init__(self, max_head: int) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._chunks: ChunkedBodyCheck | None = None  # the current request's chunked body

    @property
    def pending(self) -> bytes:
        return self._h11.trailing_data[0]

    @property
    def awaiting_head(self) -> bool:
        return self._h11.their_state is h11.IDLE

    @property
    def expects_continue(self) -> bool:
        return self._h11.they_are_waiting_for_100_continue

    @property
    def reusable(self) -> bool:
        return self._h11.our_state is h11.DONE  # MUST_CLOSE otherwise

    @property
    def body_unread(self) -> bool:
        return self._h11.their_state is h11.SEND_BODY

    def receive(self, data: bytes) -> None:
        if self._chunks is not None:
            self._chunks.feed(data)
        self._h11.receive_data(data)

    def next_head(self) -> RequestHead | None:
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as err:
            raise refusal(err.error_status_hint, str(err)) from None
        except h11.LocalProtocolError as err:  # asked again after an error
            raise ConnectionResetError(str(err)) from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request):
            if any(name == b"transfer-encoding" for name, _ in event.headers):
                self._chunks = ChunkedBodyCheck()  # check_head let only "chunked" through
                self._chunks.feed(self.pending)
            return RequestHead(event.method, event.target, event.http_version,
                               event.headers.raw_items())
        raise ConnectionResetError("client closed the connection")

    def next_body(self) -> bytes | Marker:
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as err:
            raise refusal(err.error_status_hint, str(err)) from None
        if event is h11.NEED_DATA:
            return NEED_DATA
        if isinstance(event, h11.Data):
            return event.data
        if isinstance(event, h11.EndOfMessage):
            return END
        raise ConnectionError("client closed the connection before sending the whole body")

    def continue_response(self) -> bytes:
        return self._h11.send(_CONTINUE) or b""

    def response_head(self, status_code: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        return self._h11.send(h11.Response(status_code=status_code, reason=reason, headers=headers)) or b""

    def response_body(self, data: bytes) -> bytes:
        return self._h11.send(h11.Data(data=data)) or b""

    def response_passthrough(self, part: Any) -> list[Any]:
        return self._h11.send_with_data_passthrough(h11.Data(data=part)) or []

    def response_end(self) -> bytes:
        return self._h11.send(h11.EndOfMessage()) or b""

    def start_next_cycle(self) -> bool:
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        self._chunks = None
        return True
