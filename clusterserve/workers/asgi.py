"""The ASGI worker: uvicorn's protocols and lifespan on clusterserve's dispatch.

The worker runs its own event loop: the dispatch mode's acceptor hands it
accepted sockets (asyncio never accepts: it cannot pass ``EPOLLEXCLUSIVE``),
which are attached with ``loop.connect_accepted_socket`` to uvicorn's HTTP
protocol, subclassed in ``uvicorn_internals`` to check each request as the
WSGI worker does.  A PROXY protocol header, when one is expected, is read
before that.  Lifespan startup completes before the worker says ``ready``;
a failing startup is a boot error.

A stop drains: requests in flight finish and a request that arrives is
answered, both with ``Connection: close``; a connection closes once idle
with nothing buffered.  Then WebSockets are closed with 1012 (service
restart), and at ``graceful_timeout`` whatever still runs (a stream that
never ends) is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from clusterserve import access_log, descriptors, tls
from clusterserve.access_log import AccessLog, RequestRecord, scope_environ
from clusterserve.control.request_stats import RequestStats
from clusterserve.dispatch import make_acceptor
from clusterserve.http.connection import HeadLimits, error_response
from clusterserve.http.environ import TrustedProxies
from clusterserve.http.proxy_protocol import ProxyHeaderError, ProxyHeaderReader, ProxyInfo
from clusterserve.http.response_headers import HeaderRuleMiddleware
from clusterserve.logs import Throttled, log
from clusterserve.poller import AsyncioPoller
from clusterserve.worker_exits import ExitReason, Why
from clusterserve.workers.asgi_forwarded import ForwardedMiddleware
from clusterserve.workers.grace import FAST_LIFESPAN_SHUTDOWN, INTERRUPT_GRACE
from clusterserve.workers.request_limit import RequestLimit

try:
    from clusterserve.workers import uvicorn_internals as internals
    UNSUPPORTED: str | None = None
except ImportError as err:  # the installed uvicorn lacks a name the worker uses
    internals = None  # type: ignore[assignment]  # never used then: unsupported() stops the worker first
    UNSUPPORTED = str(err)


def unsupported(ws: str) -> str | None:
    """Why this worker cannot serve: the installed uvicorn lacks a name it uses, or has no
    WebSocket implementation called ``ws``; None if it can."""
    return UNSUPPORTED or internals.unknown_ws(ws)

if TYPE_CHECKING:
    from clusterserve.workers.base import Worker

AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]  # scope, receive, send

# How often the worker counts closed connections and checks max_requests; and how
# often a stop looks whether connections have gone.
TICK = 0.1
DRAIN_POLL = 0.02
# Of graceful_timeout, what is kept for WebSockets to be closed after the HTTP drain.
WEBSOCKET_CLOSE_TIME = 1.0
# Connections closed at once (at most; a sixteenth of the limit) when the worker holds all
# it can and another arrives.
SHED_BATCH = 32


def head_limits(cfg: Any) -> HeadLimits:
    return HeadLimits(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size,
                      body=cfg.limit_request_body, refuse_underscores=cfg.header_map == "refuse")


def uvicorn_config(cfg: Any, app: Any) -> uvicorn.Config:
    """Map clusterserve's settings onto uvicorn's ``Config``."""
    return uvicorn.Config(
        app,
        # uvicorn's H11 worker classes mean the h11 protocol, as in gunicorn configs.
        http="h11" if cfg.http == "auto" and cfg.worker_class.endswith("H11Worker") else cfg.http,
        ws=cfg.ws,
        ws_max_size=cfg.ws_max_size,
        ws_max_queue=cfg.ws_max_queue,
        ws_ping_interval=cfg.ws_ping_interval,
        ws_ping_timeout=cfg.ws_ping_timeout,
        ws_per_message_deflate=cfg.ws_per_message_deflate,
        lifespan=cfg.lifespan,
        interface="auto",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the worker reads them itself, as the WSGI worker does
        root_path=cfg.root_path,
        limit_concurrency=cfg.limit_concurrency,
        timeout_keep_alive=cfg.keepalive,
    )


def import_before_fork(cfg: Any) -> None:
    """Import what an ASGI worker would import as it starts (the event loop, the protocols
    the ``http`` and ``ws`` settings name), so that the workers share those pages instead of
    each holding a private copy (measured: about 5 MiB less USS per worker)."""
    if internals is None:
        return  # the worker says why, as it boots
    loop = [] if cfg.loop == "asyncio" else ["uvloop"]
    for module in loop + internals.protocol_modules(cfg.http, cfg.ws):
        with contextlib.suppress(ImportError):  # the worker reports it, as it boots
            importlib.import_module(module)


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """The ``loop`` setting: uvloop (auto: when installed) or asyncio's own."""
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class ObservingMiddleware:
    """Watches each HTTP request's response for the access log and for metrics; either
    may be off (the middleware is left out when both are)."""

    def __init__(self, app: Any, writer: AccessLog | None, stats: RequestStats | None) -> None:
        self.app = app
        self.writer = writer
        self.stats = stats
        self.flush_due = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_wall, started = time.time(), time.perf_counter()
        response: dict[str, Any] = {"status": 500, "headers": [], "bytes": 0}
        keep_headers = self.writer is not None

        async def observe(message: Any) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                if keep_headers:
                    response["headers"] = [(k.decode("latin-1"), v.decode("latin-1"))
                                           for k, v in message.get("headers", ())]
            elif message["type"] == "http.response.body":
                response["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            duration = time.perf_counter() - started
            if self.stats is not None:
                self.stats.record(response["status"], duration)
            if self.writer is not None:
                self._log(scope, response, started_wall, duration)

    def _log(self, scope: Any, response: dict[str, Any], started: float, duration: float) -> None:
        assert self.writer is not None
        self.writer.write(RequestRecord(
            environ=scope_environ(scope), status=str(response["status"]),
            response_headers=response["headers"], body_bytes=response["bytes"],
            started=started, duration=duration, pid=os.getpid()))
        if self.writer.unflushed and not self.flush_due:
            self.flush_due = True
            asyncio.get_running_loop().call_later(access_log.FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        assert self.writer is not None
        self.writer.flush()


class LifespanStartupFailed(Exception):
    """The app's lifespan startup failed (uvicorn has logged why)."""


class AsgiServer:
    def __init__(self, worker: Worker, app: Any) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.cfg = cfg
        self.config = uvicorn_config(cfg, app)
        # A TLS handshake, a body read and a response write get as long as a WSGI worker's.
        self.io_timeout = float(cfg.timeout) or 30.0
        self.rules = internals.ConnectionRules(
            limits=head_limits(cfg), header_timeout=float(cfg.header_timeout), io_timeout=self.io_timeout,
            drop_underscores=cfg.header_map == "drop")
        self.ssl = tls.server_context(cfg.values)  # uvicorn's own ssl_* options stay unset
        self.proxy_allow = TrustedProxies(cfg.proxy_allow_ips) if cfg.proxy_protocol != "off" else None
        self.transports: list[asyncio.Transport] = []  # oldest first
        # worker_connections, or fewer when the open-file limit leaves less room.
        self.max_connections = descriptors.worker_connection_cap(cfg.worker_connections, worker.pid)
        self.shed_log = Throttled()
        self.attaching: set[asyncio.Task[None]] = set()
        self.limit: RequestLimit | None = None  # with max_requests
        self.stopping = False
        self.force_exit = False  # a fast stop: nothing more is waited for
        self.interrupts = 0  # SIGINTs so far

    # -- the process ----------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the event loop until the worker stops."""
        loop = new_event_loop(self.cfg.loop)
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        loaded = internals.load(self.config)
        writer = access_log.from_settings(self.cfg)
        # HeaderRuleMiddleware adds Date and Server, unless the app sent its own.
        self.app: AsgiApp = HeaderRuleMiddleware(loaded.app, server_header=self.cfg.server_header,
                                        date_header=self.cfg.date_header)
        if writer is not None or self.worker.request_stats is not None:
            self.app = ObservingMiddleware(self.app, writer, self.worker.request_stats)
        if self.worker.max_requests:
            self.limit = RequestLimit(self.app, self.worker.max_requests, lambda: self.acceptor.pause())
            self.app = self.limit
        if self.cfg.proxy_headers:
            self.app = ForwardedMiddleware(self.app, TrustedProxies(self.cfg.forwarded_allow_ips),
                                           self.cfg.secure_scheme_headers)
        self.protocol_class = internals.protocol_factory(loaded.http_protocol)
        self.lifespan = loaded.lifespan
        self.state = internals.new_server_state()
        self.stop_requested = asyncio.Event()
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise LifespanStartupFailed("the app's lifespan startup failed")
        self._start_serving()
        await self.stop_requested.wait()
        await self._drain()
        if self.force_exit:
            await self._bounded_lifespan_shutdown()
        else:
            await self.lifespan.shutdown()
        self.housekeeping.cancel()
        self.heartbeats.cancel()
        self._heartbeat()  # final counts, for the exit log line

    def _start_serving(self) -> None:
        loop = asyncio.get_running_loop()
        self.poller = AsyncioPoller(loop)
        self.acceptor = make_acceptor(self.worker, self.poller, self._on_connection, self._has_room,
                                      self._has_room)
        loop.add_reader(self.worker.channel.fileno(), self._on_channel)
        loop.add_signal_handler(signal.SIGTERM, self.begin_stop, "received SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        loop.add_signal_handler(signal.SIGQUIT, self.fast_stop, "received SIGQUIT")
        loop.add_signal_handler(signal.SIGABRT, self.worker.abort)
        loop.add_signal_handler(signal.SIGUSR1, self.worker.reopen_logs)
        self.heartbeats = loop.create_task(self._beat())
        self.housekeeping = loop.create_task(self._tick())
        self.acceptor.resume()
        self.worker.report_ready()

    def _heartbeat(self) -> None:
        self.worker.requests_served = internals.served(self.state)
        self.worker.heartbeat(self.acceptor.accepted, len(self.state.connections), len(self.state.tasks))
        if self._has_room():
            self.acceptor.sweep()

    async def _beat(self) -> None:
        """Heartbeats on their own task, so they go on while a stop waits."""
        while True:
            self._heartbeat()
            await asyncio.sleep(self.worker.heartbeat_interval)

    async def _tick(self) -> None:
        while True:
            self._forget_closed()
            served = internals.served(self.state)
            self.worker.requests_served = served
            max_requests = self.worker.max_requests
            if max_requests and served >= max_requests:
                self.worker.ask_to_retire(Why(ExitReason.MAX_REQUESTS, f"served {served} requests"))
            await asyncio.sleep(TICK)

    # -- stopping -------------------------------------------------------------

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        log.info("worker %s stopping: %s", self.worker.pid, reason)
        self.stopping = True
        self.acceptor.close(leave_queued=self.past_limit)
        self._on_channel()  # connections the arbiter passed before the signal
        # Libraries hook uvicorn's exit handler to end responses that never end by
        # themselves (sse-starlette closes its event streams): tell them.
        internals.announce_stop(self.config)
        self.stop_requested.set()

    def _on_interrupt(self) -> None:
        """SIGINT (Ctrl-C): the first is a graceful stop bounded by INTERRUPT_GRACE, as
        uvicorn's Ctrl-C; the second a fast stop."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.fast_stop("a second SIGINT")
            return
        self.worker.interrupted()
        bound = min(INTERRUPT_GRACE, self.cfg.graceful_timeout)
        asyncio.get_running_loop().call_later(bound, self.fast_stop, f"SIGINT's {bound:g}s are up")
        self.begin_stop("received SIGINT")

    def fast_stop(self, reason: str) -> None:
        """SIGQUIT or a second SIGINT: requests in flight are cut (never answered 503: the
        client could retry what took effect), idle connections closed, and the app's
        lifespan shutdown still runs, bounded by FAST_LIFESPAN_SHUTDOWN."""
        if self.force_exit:
            return
        self.worker.interrupted()
        log.info("worker %s stopping at once: %s", self.worker.pid, reason)
        self.stopping = self.force_exit = True
        self.acceptor.close(leave_queued=self.past_limit)
        for transport in self.transports:
            transport.close()
        for task in list(self.state.tasks):
            task.cancel()
        self.stop_requested.set()

    async def _bounded_lifespan_shutdown(self) -> None:
        try:
            await asyncio.wait_for(self.lifespan.shutdown(), FAST_LIFESPAN_SHUTDOWN)
        except asyncio.TimeoutError:
            log.warning("worker %s: the app's lifespan shutdown took more than %gs; leaving it",
                        self.worker.pid, FAST_LIFESPAN_SHUTDOWN)

    async def _drain(self) -> None:
        """Drain the HTTP connections, then close the WebSockets, within graceful_timeout."""
        loop = asyncio.get_running_loop()
        grace = float(self.cfg.graceful_timeout)
        deadline = loop.time() + grace
        self.rules.draining = True  # connections still being attached begin drained
        for connection in list(self.state.connections):
            if internals.is_http(connection):
                connection.begin_drain()
        await self._wait_until(lambda: not self.attaching and not self._http_connections(),
                               deadline - min(WEBSOCKET_CLOSE_TIME, grace / 2))
        streams = self._http_connections()
        if streams and not self.force_exit:
            log.warning("worker %s: graceful timeout, closing %d HTTP connections still open",
                        self.worker.pid, len(streams))
            for connection in streams:
                connection.close_now()
        closed: set[Any] = set()

        def websockets_closed() -> bool:
            for connection in list(self.state.connections):
                if not internals.is_http(connection) and connection not in closed:
                    closed.add(connection)
                    internals.close_websocket(connection)
            return not self.state.connections

        await self._wait_until(websockets_closed, deadline)
        for transport in self.transports:
            if not transport.is_closing():
                transport.abort()
        await self._wait_until(lambda: not self.state.tasks, deadline)
        for task in list(self.state.tasks):
            task.cancel()
        if self.state.tasks:
            await asyncio.wait(list(self.state.tasks), timeout=1.0)

    def _http_connections(self) -> list[Any]:
        return [c for c in self.state.connections if internals.is_http(c)]

    async def _wait_until(self, done: Any, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not self.force_exit and not done() and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)

    def _on_channel(self) -> None:
        messages = self.worker.channel.receive()
        if messages is None:
            asyncio.get_running_loop().remove_reader(self.worker.channel.fileno())
            self.begin_stop("the arbiter is gone")
            return
        self.acceptor.on_messages(messages)
        self.acceptor.flush()

    # -- connections ------------------------------------------------------------

    @property
    def past_limit(self) -> bool:
        return self.limit is not None and self.limit.reached

    def _has_room(self) -> bool:
        """Not stopping, and room for one more connection, or an idle one to shed for it."""
        if self.stopping or self.past_limit:
            return False
        return self._open_now() < self.max_connections or any(map(_is_silent, self.transports))

    def _open_now(self) -> int:
        return len(self.transports) + len(self.attaching)

    def _shed(self) -> None:
        """At the limit: close the oldest connections that have not sent a request, so that
        a new one, which may carry one, gets in."""
        batch = min(SHED_BATCH, max(1, self.max_connections // 16))
        shed = [t for t in self.transports if _is_silent(t)][:batch]
        for transport in shed:
            transport.close()
        if shed:
            self.shed_log.warning("worker %s holds %d connections, its limit: closed the %d oldest "
                                  "that had sent no request", self.worker.pid, self.max_connections,
                                  len(shed))

    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        if self._open_now() >= self.max_connections:
            self._shed()
        sock.setblocking(False)
        if self.force_exit:  # taken from the queue by a fast stop: the app will not start it
            _refuse_at_once(sock)
            self.acceptor.connection_closed()
            return
        task = asyncio.get_running_loop().create_task(self._attach(sock, peer))
        self.attaching.add(task)
        task.add_done_callback(self.attaching.discard)
        if not self._has_room():
            self.acceptor.pause()

    async def _attach(self, sock: socket.socket, peer: Any) -> None:
        loop = asyncio.get_running_loop()
        client, leftover = None, b""
        try:
            if self.proxy_allow is not None and self.proxy_allow.trust(_address_of(peer)):
                info, leftover = await self._read_proxy_header(sock)
                if info is not None and info.source is not None:
                    client = info.source
                if leftover and self.ssl is not None:
                    raise ProxyHeaderError("plain HTTP on a TLS port")
            transport, _ = await loop.connect_accepted_socket(
                lambda: self._create_protocol(client, leftover), sock, ssl=self.ssl,
                ssl_handshake_timeout=self.io_timeout if self.ssl else None)
        except (OSError, ProxyHeaderError, asyncio.TimeoutError) as err:
            log.debug("could not attach a connection from %s: %s", peer, err)
            if isinstance(err, ProxyHeaderError):
                await _refuse_unattached(sock, error_response(400, f"bad PROXY protocol header: {err}"))
            sock.close()
            self.acceptor.connection_closed()
        else:
            self.transports.append(transport)

    async def _read_proxy_header(self, sock: socket.socket) -> tuple[ProxyInfo | None, bytes]:
        """The PROXY header, read off the socket without a byte of what follows it."""
        loop = asyncio.get_running_loop()
        reader = ProxyHeaderReader(self.cfg.proxy_protocol)
        deadline = loop.time() + self.rules.header_timeout
        while (result := reader.read(sock)) is None:
            readable = loop.create_future()
            loop.add_reader(sock.fileno(), _wake, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(sock.fileno())
        return result

    def _create_protocol(self, client: tuple[str, int] | None, leftover: bytes) -> asyncio.Protocol:
        return self.protocol_class(config=self.config, server_state=self.state, app_state=self.lifespan.state,
                                   rules=self.rules, app=self.app, client=client, leftover=leftover)

    def _forget_closed(self) -> None:
        """Count connections that closed since the last tick (for round-robin's bookkeeping)."""
        still_open = [t for t in self.transports if not t.is_closing()]
        for _ in range(len(self.transports) - len(still_open)):
            self.acceptor.connection_closed()
        self.transports = still_open
        self.acceptor.flush()
        if self._has_room():
            self.acceptor.resume()


def _is_silent(transport: asyncio.BaseTransport) -> bool:
    """Open, and its HTTP connection has sent no request (nor a byte of one) yet."""
    protocol = transport.get_protocol()
    return not transport.is_closing() and internals.is_http(protocol) and protocol.silent()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _address_of(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else ""


def _refuse_at_once(sock: socket.socket) -> None:
    """A connection the app will not serve: 503 if its request is there, then close."""
    try:
        if sock.recv(65536):
            sock.send(error_response(503, "the server is stopping"))
    except OSError:
        pass
    sock.close()


async def _refuse_unattached(sock: socket.socket, refusal: bytes) -> None:
    """Send a refusal, then read and drop what the client still sends for a moment before
    the caller closes (unread bytes at the close would reset the connection)."""
    loop = asyncio.get_running_loop()

    async def read_to_the_end() -> None:
        while await loop.sock_recv(sock, 65536):
            pass

    try:
        sock.send(refusal)
        sock.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(read_to_the_end(), internals.LINGER)
    except (OSError, asyncio.TimeoutError):
        pass
