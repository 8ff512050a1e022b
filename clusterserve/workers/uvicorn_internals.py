"""Every use of uvicorn's internals, in one place: the rest of the ASGI worker uses
``uvicorn.Config`` and this module.

The worker runs its own event loop around uvicorn's protocols and lifespan
(``uvicorn.Server`` would accept on its own sockets and close keep-alive
connections under busy clients when it stops).  What it takes from uvicorn
is not public API, so the names are listed in ``USES``: importing this
module checks the modules, classes and methods there and fails with one
line naming the uvicorn release and the name that has gone, and
tests/unit/test_uvicorn_internals.py checks every name, the attributes set
on instances included, against the installed release.  CI runs the ASGI
tests on the oldest supported release and on the newest.

The protocol subclasses put the WSGI worker's request checks where
uvicorn's parser finds each head (``check_head``, the ``limit_request_*``
limits, ``header_map``, ``header_timeout``, strict chunked bodies), bound a
stalled body and a client that stops reading by ``timeout``, and drain a
connection without losing a request: the last response before a close
says ``Connection: close``, and an idle connection is closed only once it
has been idle for a moment with nothing buffered.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeGuard, cast

import h11
import uvicorn

from clusterserve.http.connection import HeadLimits, error_response
from clusterserve.http.errors import HttpError
from clusterserve.http.head_checks import NO_BODY, TOKEN, ChunkedBodyCheck, Framing, HeadEnd, check_head
from clusterserve.workers.grace import FRESH_CONNECTION_GRACE

# The oldest uvicorn release the test suite passes on (pyproject.toml's lower bound):
# 0.21 brought the lifespan state, 0.23 ws_max_queue.
OLDEST_SUPPORTED = "0.23.0"
# After a refusal, how long what the client still sends is read and dropped before the
# close: closing with unread bytes would make the kernel send a reset, which can destroy
# the refusal before the client reads it.
LINGER = 1.0
CLOSE = (b"connection", b"close")


class Use(NamedTuple):
    """One uvicorn name this module uses.  ``members`` are looked up on the class when
    this module is imported; ``attributes`` exist only on instances (the tests check them)."""

    module: str
    name: str
    members: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    needs: str = ""  # a package the module imports, without which it is not used


HTTP_PROTOCOL_MEMBERS = ("connection_made", "connection_lost", "data_received", "shutdown",
                         "send_400_response", "on_response_complete", "timeout_keep_alive_handler",
                         "pause_writing", "resume_writing", "_unset_keepalive_if_required")
HTTP_PROTOCOL_ATTRIBUTES = ("app", "client", "cycle", "flow", "headers", "loop", "scheme", "scope",
                            "timeout_keep_alive", "timeout_keep_alive_task", "transport")
CYCLE_ATTRIBUTES = ("default_headers", "disconnected", "message_event", "response_started",
                    "response_complete")

USES = (
    Use("uvicorn.server", "Server", members=("handle_exit",)),
    Use("uvicorn.server", "ServerState",
        attributes=("connections", "tasks", "total_requests", "default_headers")),
    Use("uvicorn.config", "HTTP_PROTOCOLS"),
    Use("uvicorn.config", "WS_PROTOCOLS"),
    Use("uvicorn.config", "Config", members=("load",),
        attributes=("loaded_app", "http_protocol_class", "lifespan_class")),
    Use("uvicorn.lifespan.on", "LifespanOn", members=("startup", "shutdown"),
        attributes=("should_exit", "state")),
    Use("uvicorn.lifespan.off", "LifespanOff", members=("startup", "shutdown"),
        attributes=("should_exit", "state")),
    Use("uvicorn.protocols.http.h11_impl", "H11Protocol", members=(*HTTP_PROTOCOL_MEMBERS, "handle_events"),
        attributes=(*HTTP_PROTOCOL_ATTRIBUTES, "conn")),
    Use("uvicorn.protocols.http.h11_impl", "RequestResponseCycle", attributes=CYCLE_ATTRIBUTES),
    Use("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol",
        members=(*HTTP_PROTOCOL_MEMBERS, "on_header", "on_headers_complete", "on_message_begin", "on_message_complete"),
        attributes=(*HTTP_PROTOCOL_ATTRIBUTES, "parser", "pipeline"), needs="httptools"),
    Use("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle", attributes=CYCLE_ATTRIBUTES,
        needs="httptools"),
    Use("uvicorn.protocols.http.flow_control", "FlowControl", members=("pause_reading", "resume_reading"),
        attributes=("read_paused", "write_paused")),
)
def find_missing(uses: tuple[Use, ...]) -> str | None:
    """The first name of ``uses`` (module, class or member) the installed uvicorn lacks."""
    for use in uses:
        try:
            module = importlib.import_module(use.module)
        except ModuleNotFoundError as err:
            if use.needs and err.name == use.needs:
                continue  # an optional package that is not installed
            return use.module
        found = getattr(module, use.name, None)
        if found is None:
            return f"{use.module}.{use.name}"
        for member in use.members:
            if not hasattr(found, member):
                return f"{use.module}.{use.name}.{member}"
    return None


_missing = find_missing(USES)
if _missing is not None:
    raise ImportError(f"the ASGI worker needs uvicorn's {_missing}, which uvicorn {uvicorn.__version__} "
                      f"does not have; install a release it supports (uvicorn>={OLDEST_SUPPORTED})")

from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402 - after the check of the names
from uvicorn.server import ServerState  # noqa: E402 - after the check of the names

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is in the standard extra
    # Neither is used then: protocol_factory never picks GuardedHttpToolsProtocol.
    httptools = None  # type: ignore[assignment]  # the module, or None without httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]  # the class, or None without httptools


# -- what the worker asks of uvicorn ---------------------------------------------------


class Loaded(NamedTuple):
    app: Any  # with uvicorn's middlewares (ASGI 2, WSGI)
    lifespan: Any  # startup(), shutdown(), should_exit, state
    http_protocol: type[asyncio.Protocol]  # the class --http names (auto: httptools if installed)


def load(config: uvicorn.Config) -> Loaded:
    config.load()
    return Loaded(config.loaded_app, config.lifespan_class(config), config.http_protocol_class)


def unknown_ws(name: str) -> str | None:
    """Why the ``ws`` setting names an implementation the installed uvicorn lacks, or None."""
    from uvicorn.config import WS_PROTOCOLS

    if name in WS_PROTOCOLS:
        return None
    return f"setting 'ws': uvicorn {uvicorn.__version__} has no {name!r} WebSocket implementation"


def protocol_modules(http: str, ws: str) -> list[str]:
    """The modules of the protocols ``http`` and ``ws`` name, as uvicorn's ``Config.load``
    will import them (none for ``ws=none`` or a name uvicorn lacks)."""
    from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS

    targets = [HTTP_PROTOCOLS.get(http), WS_PROTOCOLS.get(ws)]
    return [target.partition(":")[0] for target in targets if isinstance(target, str)]


def new_server_state() -> ServerState:
    """What uvicorn's protocols share: connections, tasks, the request count, and headers
    every response starts with (none: HeaderRuleMiddleware adds Date and Server)."""
    return ServerState()


def announce_stop(config: uvicorn.Config) -> None:
    """Call uvicorn's ``Server.handle_exit``, as uvicorn does on SIGTERM: libraries hook it
    (sse-starlette ends its event streams then)."""
    uvicorn.Server(config).handle_exit(signal.SIGTERM, None)


def served(state: ServerState) -> int:
    return state.total_requests


def is_http(protocol: object) -> TypeGuard[Guarded]:
    return isinstance(protocol, Guarded)


def close_websocket(protocol: Any) -> None:
    """uvicorn's stop of a WebSocket connection (each of its implementations has one): a
    close frame with 1012, service restart."""
    protocol.shutdown()


def protocol_factory(base: type[asyncio.Protocol]) -> type[Guarded]:
    """The guarded subclass of the HTTP protocol class uvicorn chose."""
    if HttpToolsProtocol is not None and issubclass(base, HttpToolsProtocol):
        return GuardedHttpToolsProtocol
    if issubclass(base, H11Protocol):
        return GuardedH11Protocol
    raise ValueError(f"the ASGI worker cannot guard uvicorn's {base.__name__}")


# -- the protocols ----------------------------------------------------------------------


@dataclass
class ConnectionRules:
    """Per worker: what every connection enforces, and whether the worker is draining."""

    limits: HeadLimits
    header_timeout: float
    io_timeout: float  # a stalled body, a client that stops reading
    drop_underscores: bool  # header_map=drop
    draining: bool = False


class Timer(enum.Enum):
    """What a connection's one timer is for."""

    NONE = "none"
    FRESH = "fresh"  # connected, not a byte yet: header_timeout from the start
    HEAD = "head"  # a head started: header_timeout from its first byte
    BODY = "body"  # a body to come: timeout without a byte
    WRITE = "write"  # the client does not read: timeout


if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl

    class UvicornHttpProtocol(asyncio.Protocol):
        """What uvicorn's two HTTP protocol classes have, as far as ``Guarded`` uses it: its
        base for the type checker.  At run time, the class it is mixed into has all this."""

        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        flow: FlowControl
        client: tuple[str, int] | None
        scheme: Literal["http", "https"] | None
        headers: list[tuple[bytes, bytes]]
        cycle: Any  # h11_impl's or httptools_impl's RequestResponseCycle; None before the first request
        timeout_keep_alive: float  # uvicorn's keep-alive setting, or less while draining
        timeout_keep_alive_task: asyncio.TimerHandle | None

        def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
            ...

        def on_response_complete(self) -> None: ...

        def timeout_keep_alive_handler(self) -> None: ...

        def _unset_keepalive_if_required(self) -> None: ...
else:
    UvicornHttpProtocol = object


class Guarded(UvicornHttpProtocol):
    """What both HTTP protocols add to uvicorn's (mixed in before uvicorn's class)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 rules: ConnectionRules, app: Any, client: tuple[str, int] | None = None,
                 leftover: bytes = b"") -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self.rules = rules
        self.app = app
        self.proxied_client = client  # from a PROXY protocol header
        self.leftover = leftover  # request bytes read with the PROXY header
        self.refused = False
        self.draining = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_for = Timer.NONE
        self.last_input = 0.0  # loop time of the last bytes received
        self.idle_since = 0.0  # loop time the connection last became idle
        self.client_closed = False  # the client shut its side (its last request may be in flight)
        self.closing_cycle: tuple[Any, list[tuple[bytes, bytes]]] | None = None  # (cycle, its headers)

    # -- uvicorn's protocol interface ---------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.proxied_client is not None:
            self.client = self.proxied_client
        self.idle_since = self.loop.time()
        self._set_timer(Timer.FRESH)
        if self.rules.draining:
            self.begin_drain()
        if self.leftover:
            leftover, self.leftover = self.leftover, b""
            self.data_received(leftover)

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_timer(Timer.NONE)
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        """The client closed its side: answer what it sent, then close (a cut-short
        request gets 400, as in the WSGI worker)."""
        self.client_closed = True
        if self.refused:
            return False
        self.close_when_answered()
        return self.scheme != "https"  # keep it open for the answers (TLS cannot half-close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's parser refused the request, or a check here did (with its own status)."""
        self.refuse(self.refusal() or HttpError(400, msg))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_since = self.loop.time()
        self.after_input()
        if self.client_closed:
            self.close_when_answered()

    def close_when_answered(self) -> None:
        if self.transport.is_closing():
            return
        if self.head_pending():
            self.refuse(HttpError(400, "the client closed in the middle of a request head"))
        elif self.body_pending():
            self.refuse(HttpError(400, "the client closed before sending the whole body"))
        elif not self.in_flight():
            self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.after_input()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.after_input()

    # -- refusals --------------------------------------------------------------

    def refusal(self) -> HttpError | None:
        """The check that refused the request, if one of ours did."""
        raise NotImplementedError

    def refuse(self, err: HttpError) -> None:
        """Answer with the error (unless a response is under way) and close.

        The app of a request in flight sees the request end (``http.disconnect``).
        """
        if self.refused:
            return
        self.refused = True
        self._set_timer(Timer.NONE)
        cycle = self.cycle  # the last request's: it may be complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(error_response(err.status, err.detail))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER, self.transport.close)

    # -- what the connection is waiting for ----------------------------------------

    def head_pending(self) -> bool:
        """Bytes of a request head are buffered, and the head is not complete."""
        raise NotImplementedError

    def body_pending(self) -> bool:
        """The request in flight has body bytes still to come."""
        raise NotImplementedError

    def silent(self) -> bool:
        """No request, nor a byte of one, has come on this connection yet."""
        return self.cycle is None and not self.head_pending()

    def in_flight(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def after_input(self) -> None:
        """After bytes arrived or a response ended: arm the timer the state calls for."""
        if self.transport.is_closing():
            return
        if self.flow.write_paused:
            wanted = Timer.WRITE
        elif self.head_pending():
            wanted = Timer.HEAD
        elif self.body_pending() and not self.flow.read_paused:
            wanted = Timer.BODY
        elif self.timer_for is Timer.FRESH and not self.in_flight():
            wanted = Timer.FRESH
        else:
            wanted = Timer.NONE
        self._set_timer(wanted)
        if self.draining:
            self.settle_drain()

    def _set_timer(self, wanted: Timer) -> None:
        if wanted is self.timer_for:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_for = wanted
        self.last_input = self.loop.time()
        if wanted is Timer.HEAD or wanted is Timer.FRESH:
            self.timer = self.loop.call_later(self.rules.header_timeout, self._on_timer)
        elif wanted is not Timer.NONE:
            self.timer = self.loop.call_later(self.rules.io_timeout, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        kind, self.timer_for = self.timer_for, Timer.NONE
        if self.transport.is_closing():
            return
        if kind is Timer.HEAD:
            self.refuse(HttpError(408, "request head not received in time"))
        elif kind is Timer.FRESH:
            self.transport.close()
        elif kind is Timer.BODY:
            quiet = self.loop.time() - self.last_input
            if quiet < self.rules.io_timeout or self.flow.read_paused:  # bytes came, or the app
                self.timer_for = kind                                   # is not reading yet
                wait = self.rules.io_timeout - quiet if quiet < self.rules.io_timeout else self.rules.io_timeout
                self.timer = self.loop.call_later(wait, self._on_timer)
                return
            self.refuse(HttpError(408, f"no request body bytes for {self.rules.io_timeout:g}s"))
        elif kind is Timer.WRITE:
            self.transport.abort()  # the client stopped reading: what is buffered cannot go out

    def note_input(self) -> None:
        self.last_input = self.loop.time()

    # -- draining ------------------------------------------------------------------

    def begin_drain(self) -> None:
        """The worker is stopping: end this connection without failing a request.

        A request in flight, or one that arrives now, is answered with
        ``Connection: close``; an idle connection is closed once it has been
        idle for ``FRESH_CONNECTION_GRACE`` with nothing buffered.
        """
        if self.draining:
            return
        self.draining = True
        self.timeout_keep_alive = min(self.timeout_keep_alive, FRESH_CONNECTION_GRACE)
        if not self.in_flight() and not self.head_pending() and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            idle_for = self.loop.time() - self.idle_since
            self.timeout_keep_alive_task = self.loop.call_later(
                max(0.0, self.timeout_keep_alive - idle_for), self.timeout_keep_alive_handler)
        self.settle_drain()

    def settle_drain(self) -> None:
        """Mark the response that closes the connection: the last request's, if its
        response has not begun and nothing more is buffered; a request marked before a
        later one arrived is not marked any more.  The mark is a ``Connection: close``
        among the headers the response starts with, which every uvicorn release honours."""
        cycle = self.cycle
        buffered = self.bytes_buffered()
        if self.closing_cycle is not None:
            marked, headers = self.closing_cycle
            if marked is cycle and not buffered:
                return
            if not marked.response_started:
                marked.default_headers = headers
            self.closing_cycle = None
        if cycle is not None and not cycle.response_started and not cycle.response_complete \
                and not buffered and CLOSE not in cycle.default_headers:
            self.closing_cycle = (cycle, cycle.default_headers)
            cycle.default_headers = [*cycle.default_headers, CLOSE]

    def bytes_buffered(self) -> bool:
        """Bytes of the client's beyond the request in flight (a next request) are buffered."""
        raise NotImplementedError

    def close_now(self) -> None:
        """The drain's time is up (a stream that never ends): close the connection."""
        self.transport.close()


class CheckedH11Connection(h11.Connection):
    """h11's state machine with the worker's checks at the moment h11 takes a head.

    ``next_event`` checks the raw head (found as bytes arrive, by ``HeadEnd``)
    before h11 parses it, and a chunked body is followed by ``ChunkedBodyCheck``
    as its bytes arrive.  A refusal is raised as h11's ``RemoteProtocolError``,
    which uvicorn answers through ``send_400_response``; ``refusal`` keeps the status.
    """

    def __init__(self, limits: HeadLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self.limits = limits
        self.head_end = HeadEnd()
        self.head_size = 0  # bytes of the current head received
        self.framing: Framing | None = None  # the current head's, once checked
        self.underscores = False
        self.chunks: ChunkedBodyCheck | None = None
        self.body_received = 0  # of a chunked body, decoded
        self.refusal: HttpError | None = None

    def receive_data(self, data: bytes) -> None:
        if self.their_state is h11.IDLE:
            self.head_end.feed(data)
            self.head_size += len(data)
        elif self.chunks is not None:
            self.receive_chunks(self.chunks, data)
        super().receive_data(data)

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        pending = self.trailing_data[0]  # a pipelined request, maybe
        self.head_end.reset(pending)
        self.head_size = len(pending)
        self.framing = None
        self.underscores = False
        self.chunks = None

    def next_event(self) -> Any:
        if self.refusal is not None:
            raise h11.RemoteProtocolError(self.refusal.detail, error_status_hint=self.refusal.status)
        if self.their_state is h11.MUST_CLOSE:
            return h11.PAUSED  # the connection closes after the response: nothing more is read
        if self.their_state is h11.IDLE and self.framing is None and self.head_end.end >= 0:
            head = self.trailing_data[0][:self.head_end.end]
            try:
                self.framing = check_head(head)
                self.underscores = self.limits.check(head, self.framing)
            except HttpError as err:
                self.refusal = err
                raise h11.RemoteProtocolError(err.detail, error_status_hint=err.status) from None
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as err:
            if self.refusal is None:
                status = err.error_status_hint if 400 <= err.error_status_hint < 600 else 400
                self.refusal = self.limits.refine(HttpError(status, str(err)), self.trailing_data[0])
            raise
        if type(event) is h11.Request:
            if self.framing is None:  # h11 found a head that HeadEnd did not: refuse, never guess
                self.refusal = HttpError(400, "request head not checked")
                raise h11.RemoteProtocolError(self.refusal.detail, error_status_hint=400)
            self.head_size = 0
            if self.framing.chunked:
                self.chunks = ChunkedBodyCheck()
                self.body_received = 0
                self.receive_chunks(self.chunks, self.trailing_data[0])
        return event

    def receive_chunks(self, chunks: ChunkedBodyCheck, data: bytes) -> None:
        """Follow a chunked body: checked strictly, and counted against limit_request_body
        (the refusal comes before h11 hands on the bytes that went over)."""
        if self.refusal is not None:
            return
        try:
            pieces, _ = chunks.decode(data)
            self.body_received += sum(len(piece) for piece in pieces)
            self.limits.check_body_size(self.body_received)
        except HttpError as err:
            self.refusal = err


# The two guarded classes ignore mypy's [misc] for two definitions that differ from uvicorn's
# annotations: eof_received returns True to keep the connection open, as asyncio allows (uvicorn
# says None), and timeout_keep_alive is a float while draining (uvicorn says int).


class GuardedH11Protocol(Guarded, H11Protocol):  # type: ignore[misc]  # two definitions differ, as said above
    conn: CheckedH11Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Sized by the head limits (uvicorn's h11_max_incomplete_event_size sized its own).
        self.conn = CheckedH11Connection(self.rules.limits)

    def refusal(self) -> HttpError | None:
        return self.conn.refusal

    def head_pending(self) -> bool:
        return self.conn.their_state is h11.IDLE and self.conn.head_size > 0

    def body_pending(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    def bytes_buffered(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped until the close
        self.note_input()
        super().data_received(data)
        self.after_input()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self.conn.underscores and self.rules.drop_underscores:
            # The app has not run yet: what it will see loses the ambiguous names.
            self.headers[:] = [(name, value) for name, value in self.headers if b"_" not in name]



# Methods llhttp knows by heart (it refuses other tokens, which RFC 9110 allows and h11 takes):
# any other reaches llhttp as GET, and the app as itself (framing does not depend on it).
METHOD = re.compile(TOKEN)
LLHTTP_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"))


if TYPE_CHECKING:
    HttpToolsBase = HttpToolsProtocol
else:
    HttpToolsBase = HttpToolsProtocol or object  # without httptools: a class never used


class GuardedHttpToolsProtocol(Guarded, HttpToolsBase):  # type: ignore[misc]  # as GuardedH11Protocol
    """llhttp gets one message at a time: a head once ``check_head`` accepted it, then
    its body up to its end as the head frames it (a chunked body as ``ChunkedBodyCheck``
    decodes it, framed again plainly), so every head llhttp parses has been checked.  llhttp must agree where
    each message ends; where it does not, the request is refused.  What h11 checks and
    llhttp does not (one ``Host``) is checked here too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = bytearray()  # received, not given to llhttp yet
        self.head_end = HeadEnd()
        self.framing = NO_BODY
        self.in_body = False
        self.body_left = 0  # Content-Length bytes still to give llhttp
        self.body_received = 0  # of a chunked body, decoded
        self.chunks: ChunkedBodyCheck | None = None
        self.messages_begun = 0
        self.messages_done = 0  # as llhttp counts them
        self.underscores = False
        self.method = ""  # the request's method, when llhttp was given GET instead
        self.retouch = False  # the head's values need trimming, or names dropping
        self.reads_on = True  # the last request leaves the connection open (llhttp's word)
        self.own_refusal: HttpError | None = None

    def refusal(self) -> HttpError | None:
        return self.own_refusal

    def head_pending(self) -> bool:
        return not self.in_body and bool(self.pending) and not self.in_flight() and self.reads_on

    def body_pending(self) -> bool:
        return self.in_body

    def bytes_buffered(self) -> bool:
        return bool(self.pending) and not self.in_body

    def refuse_inside(self, err: HttpError) -> None:
        """From a parser callback: stop llhttp; uvicorn then calls send_400_response."""
        self.own_refusal = err
        raise httptools.HttpParserError(err.detail)

    # -- bytes in ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._unset_keepalive_if_required()  # as uvicorn's data_received, for a partial head too
        self.note_input()
        if not self.in_body:
            self.head_end.feed(data)
        self.pending += data
        self._give()
        self.after_input()

    def _give(self) -> None:
        """Give llhttp what it may have now.  The next head waits until the response to
        the request in flight is complete, as h11 makes it wait: a refusal never goes out
        before an earlier answer, and a connection that closes after its response reads
        no further."""
        while self.pending and not self.refused and self.transport.get_protocol() is self:
            if self.in_body:
                if not self._give_body():
                    break
            elif self.in_flight() or not self.reads_on:
                self.flow.pause_reading()  # a pipelined request: read on after the response
                break
            elif not self._give_head():
                break
        if self.transport.get_protocol() is not self and self.pending:
            # A WebSocket took the connection: what came after the handshake is its.
            rest, self.pending = bytes(self.pending), bytearray()
            cast(asyncio.Protocol, self.transport.get_protocol()).data_received(rest)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.pending and not self.transport.is_closing():
            self._give()
            self.after_input()

    def _give_head(self) -> bool:
        end = self.head_end.end
        if end < 0:
            if len(self.pending) > self.rules.limits.max_head:
                self.refuse(self.rules.limits.refine(HttpError(431, "request head too large"),
                                                     bytes(self.pending)))
            return False
        head = bytes(self.pending[:end])
        del self.pending[:end]
        try:
            self.framing = check_head(head)
            self.underscores = self.rules.limits.check(head, self.framing)
        except HttpError as err:
            self.refuse(err)
            return False
        self.retouch = (self.underscores and self.rules.drop_underscores) or b" \r\n" in head \
            or b"\t\r\n" in head
        self.chunks = ChunkedBodyCheck() if self.framing.chunked else None
        self.body_received = 0
        self.body_left = self.framing.length or 0
        self.in_body = self.chunks is not None or self.body_left > 0
        done = self.messages_done
        method = head[:head.index(b" ")]
        if method in LLHTTP_METHODS:
            self.method = ""
            self._parse(head)
        elif METHOD.fullmatch(method):
            self.method = method.decode("ascii")
            self._parse(b"GET" + head[len(method):])
        else:
            self.refuse(HttpError(400, "malformed request method"))
            return False
        if not self.in_body and self.messages_done == done and not self.refused:
            self.refuse(HttpError(400, "the request head and llhttp disagree on its body"))
        self.head_end.reset(bytes(self.pending) if not self.in_body else b"")
        return not self.refused

    def _give_body(self) -> bool:
        if self.chunks is not None:
            try:
                pieces, used = self.chunks.decode(self.pending)
                self.body_received += sum(len(data) for data in pieces)
                self.rules.limits.check_body_size(self.body_received)
            except HttpError as err:
                self.refuse(err)
                return False
            ends = self.chunks.done
            # llhttp gets the data in plain chunks: no extensions, no trailers (both
            # checked here; neither reaches the app).
            piece = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in pieces if data)
            if ends:
                piece += b"0\r\n\r\n"
        else:
            used = min(self.body_left, len(self.pending))
            self.body_left -= used
            ends = self.body_left == 0
            piece = bytes(self.pending[:used])
        del self.pending[:used]
        done = self.messages_done
        self._parse(piece)
        if self.refused:
            return False
        if ends != (self.messages_done > done):
            self.refuse(HttpError(400, "the request body and llhttp disagree on its end"))
            return False
        if ends:
            self.in_body = False
            self.head_end.reset(bytes(self.pending))
        return True

    def _parse(self, data: bytes) -> None:
        """uvicorn's data_received: llhttp, then uvicorn's answers to its callbacks."""
        super().data_received(data)

    # -- llhttp's callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.messages_begun += 1
        if self.messages_begun > self.messages_done + 1:  # llhttp saw a message we did not
            self.refuse_inside(HttpError(400, "the request body and llhttp disagree on its end"))
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self.messages_done += 1
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        # llhttp's word on keep-alive holds until the message is complete, no longer.
        self.reads_on = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        super().on_headers_complete()
        if self.method or self.retouch:
            self._as_checked()
        if not self.reads_on and self.cycle is not None and CLOSE not in self.cycle.default_headers:
            # The client asked to close: the response says so (uvicorn before 0.53 did not
            # for a "Connection: Close" spelled so), and the connection closes after it.
            self.cycle.default_headers = [*self.cycle.default_headers, CLOSE]

    def _as_checked(self) -> None:
        """What the app is handed, as the WSGI worker hands it: the method llhttp was not
        given, values without trailing whitespace (llhttp keeps it), no '_' names with
        header_map=drop.  The app has not run yet."""
        if self.method:
            self.scope["method"] = self.method
        drop = self.underscores and self.rules.drop_underscores
        self.headers[:] = [(name, value.rstrip(b" \t")) for name, value in self.headers
                           if not (drop and b"_" in name)]
