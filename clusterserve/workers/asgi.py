"""The ASGI worker: uvicorn's protocols and lifespan on clusterserve's dispatch.

uvicorn's ``Server`` runs the lifespan, keeps the protocol state and does
the graceful shutdown; this worker replaces how connections arrive.  It
never lets asyncio accept on a listener (asyncio cannot pass
``EPOLLEXCLUSIVE``): the dispatch mode's acceptor hands it accepted
sockets, which are attached with ``loop.connect_accepted_socket`` to the
protocol uvicorn would have used.  Lifespan startup completes before the
worker says ``ready``; a failing startup is a boot error.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from clusterserve import access_log, descriptors, tls
from clusterserve.control.request_stats import RequestStats
from clusterserve.dispatch import make_acceptor
from clusterserve.http.connection import error_response
from clusterserve.http.response_headers import HeaderRuleMiddleware
from clusterserve.access_log import AccessLog, RequestRecord, scope_environ
from clusterserve.logs import Throttled, log
from clusterserve.poller import AsyncioPoller
from clusterserve.worker_exits import ExitReason, Why
from clusterserve.workers.grace import FAST_LIFESPAN_SHUTDOWN, FRESH_CONNECTION_GRACE, INTERRUPT_GRACE
from clusterserve.workers.request_limit import RequestLimit

if TYPE_CHECKING:
    from clusterserve.workers.base import Worker


def uvicorn_config(cfg: Any, app: Any) -> uvicorn.Config:
    """Map clusterserve's settings onto uvicorn's ``Config``."""
    return uvicorn.Config(
        app,
        loop=cfg.loop,
        # uvicorn's H11 worker classes mean the h11 protocol, as in gunicorn configs.
        http="h11" if cfg.http == "auto" and cfg.worker_class.endswith("H11Worker") else cfg.http,
        ws=cfg.ws,
        lifespan=cfg.lifespan,
        interface="auto",
        log_config=None,
        access_log=False,
        proxy_headers=cfg.proxy_headers,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
        root_path=cfg.root_path,
        limit_concurrency=cfg.limit_concurrency,
        backlog=cfg.backlog,
        timeout_keep_alive=cfg.keepalive,
        timeout_graceful_shutdown=cfg.graceful_timeout,
        # HeaderRuleMiddleware adds Date and Server, unless the app sent its own.
        server_header=False,
        date_header=False,
    )


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


# Connections closed at once (at most; a sixteenth of the limit) when the worker holds all
# it can and another arrives.
SHED_BATCH = 32


def _is_silent(transport: asyncio.BaseTransport) -> bool:
    """Open, and its HTTP protocol has had no request yet (uvicorn makes a ``cycle`` for each)."""
    return not transport.is_closing() and getattr(transport.get_protocol(), "cycle", False) is None


class LifespanStartupFailed(Exception):
    """The app's lifespan startup failed (uvicorn has logged why)."""


class AsgiServer(uvicorn.Server):
    def __init__(self, worker: Worker, app: Any) -> None:
        super().__init__(uvicorn_config(worker.cfg, app))
        self.worker = worker
        self.transports: list[asyncio.BaseTransport] = []  # oldest first
        # worker_connections, or fewer when the open-file limit leaves less room.
        self.max_connections = descriptors.worker_connection_cap(worker.cfg.worker_connections, worker.pid)
        self.shed_log = Throttled()
        self.attaching: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.interrupts = 0  # SIGINTs so far
        self.limit: RequestLimit | None = None  # with max_requests
        # A TLS handshake gets as long as a WSGI request head.
        self.handshake_timeout = float(worker.cfg.timeout) or 30.0

    # -- the process ----------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the event loop until the worker stops."""
        factory = self.config.get_loop_factory()
        loop = factory() if factory is not None else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        self.config.load()
        cfg = self.worker.cfg
        self.config.loaded_app = HeaderRuleMiddleware(
            self.config.loaded_app, server_header=cfg.server_header, date_header=cfg.date_header)
        self.config.ssl = tls.server_context(cfg.values)  # uvicorn's own ssl_* options stay unset
        writer = access_log.from_settings(cfg)
        if writer is not None or self.worker.request_stats is not None:
            self.config.loaded_app = ObservingMiddleware(self.config.loaded_app, writer,
                                                         self.worker.request_stats)
        if self.worker.max_requests:
            self.limit = RequestLimit(self.config.loaded_app, self.worker.max_requests,
                                      lambda: self.acceptor.pause())
            self.config.loaded_app = self.limit
        self.lifespan = self.config.lifespan_class(self.config)
        await self.startup()
        if not self.should_exit:
            await self.main_loop()
        if self.started:
            await self.shutdown()
            self.heartbeats.cancel()
        self._heartbeat()  # final counts, for the exit log line

    def _heartbeat(self) -> None:
        self.worker.heartbeat(self.acceptor.accepted, len(self.server_state.connections),
                              len(self.server_state.tasks))
        if self._has_room():
            self.acceptor.sweep()

    async def _beat(self) -> None:
        """Heartbeats on their own task, so they go on while uvicorn's shutdown waits."""
        while True:
            self._heartbeat()
            await asyncio.sleep(self.worker.heartbeat_interval)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise LifespanStartupFailed("the app's lifespan startup failed")
        loop = asyncio.get_running_loop()
        self.servers = []
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
        self.acceptor.resume()
        self.worker.report_ready()
        self.started = True

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        self._forget_closed()
        self.worker.requests_served = self.server_state.total_requests
        max_requests = self.worker.max_requests
        if max_requests and self.server_state.total_requests >= max_requests:
            self.worker.ask_to_retire(Why(ExitReason.MAX_REQUESTS,
                                          f"served {self.server_state.total_requests} requests"))
        return should_exit

    @property
    def past_limit(self) -> bool:
        return self.limit is not None and self.limit.reached

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.acceptor.close(leave_queued=self.past_limit)
        await self._let_fresh_connections_send()
        await super().shutdown()
        if self.force_exit:  # uvicorn skips the lifespan shutdown then; the app still gets it
            await self._bounded_lifespan_shutdown()

    async def _bounded_lifespan_shutdown(self) -> None:
        done = getattr(self.lifespan, "shutdown_event", None)
        if done is not None and done.is_set():
            return
        try:
            await asyncio.wait_for(self.lifespan.shutdown(), FAST_LIFESPAN_SHUTDOWN)
        except asyncio.TimeoutError:
            log.warning("worker %s: the app's lifespan shutdown took more than %gs; leaving it",
                        self.worker.pid, FAST_LIFESPAN_SHUTDOWN)

    async def _let_fresh_connections_send(self) -> None:
        """uvicorn's shutdown closes a connection that has no request yet: give it a moment.

        A uvicorn HTTP protocol has no ``cycle`` until its first request arrives.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FRESH_CONNECTION_GRACE
        while not self.force_exit and loop.time() < deadline and (self.attaching or any(
                getattr(protocol, "cycle", True) is None for protocol in self.server_state.connections)):
            await asyncio.sleep(0.02)

    # -- stopping -------------------------------------------------------------

    def _on_interrupt(self) -> None:
        """SIGINT (Ctrl-C): the first is a graceful stop bounded by INTERRUPT_GRACE, as
        uvicorn's Ctrl-C; the second a fast stop."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.fast_stop("a second SIGINT")
            return
        self.worker.interrupted()
        # At the bound, what still runs is cut as by SIGQUIT (uvicorn's own timeout would
        # answer those requests 500 instead).
        bound = min(INTERRUPT_GRACE, self.worker.cfg.graceful_timeout)
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
        self.stopping = True
        self.acceptor.close()
        self.should_exit = self.force_exit = True
        for protocol in list(self.server_state.connections):
            protocol.transport.close()
        for task in list(self.server_state.tasks):
            task.cancel()

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        log.info("worker %s stopping: %s", self.worker.pid, reason)
        self.stopping = True
        self.acceptor.close(leave_queued=self.past_limit)
        self._on_channel()  # connections the arbiter passed before the signal
        # Through uvicorn's own exit handler, not by setting should_exit: libraries hook it
        # to end their endless responses (sse-starlette closes its event streams).
        self.handle_exit(signal.SIGTERM, None)

    def _on_channel(self) -> None:
        messages = self.worker.channel.receive()
        if messages is None:
            asyncio.get_running_loop().remove_reader(self.worker.channel.fileno())
            self.begin_stop("the arbiter is gone")
            return
        self.acceptor.on_messages(messages)
        self.acceptor.flush()

    # -- connections ------------------------------------------------------------

    def _has_room(self) -> bool:
        """Not stopping, and room for one more connection, or an idle one to shed for it."""
        if self.stopping or self.past_limit:
            return False
        return self._open_now() < self.max_connections or any(map(_is_silent, self.transports))

    def _open_now(self) -> int:
        return len(self.transports) + len(self.attaching)

    def _shed(self) -> None:
        """At the limit: close the oldest connections that have not sent a request, so that
        a new one, which may carry one, gets in (uvicorn never times them out)."""
        batch = min(SHED_BATCH, max(1, self.max_connections // 16))
        shed = [t for t in self.transports if _is_silent(t)][:batch]
        for transport in shed:
            transport.close()
        if shed:
            self.shed_log.warning("worker %s holds %d connections, its limit: closed the %d oldest "
                                  "that had sent no request", self.worker.pid, self.max_connections,
                                  len(shed))

    def _create_protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        if self._open_now() >= self.max_connections:
            self._shed()
        sock.setblocking(False)
        if self.force_exit:  # taken from the queue by a fast stop: the app will not start it
            _refuse_at_once(sock)
            self.acceptor.connection_closed()
            return
        task = asyncio.get_running_loop().create_task(self._attach(sock))
        self.attaching.add(task)
        task.add_done_callback(self.attaching.discard)
        if not self._has_room():
            self.acceptor.pause()

    async def _attach(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        handshake = {"ssl": self.config.ssl, "ssl_handshake_timeout": self.handshake_timeout} \
            if self.config.ssl else {}
        try:
            transport, _ = await loop.connect_accepted_socket(self._create_protocol, sock, **handshake)
        except OSError as err:
            log.debug("could not attach a connection: %s", err)
            sock.close()
            self.acceptor.connection_closed()
        else:
            self.transports.append(transport)

    def _forget_closed(self) -> None:
        """Count connections that closed since the last tick (for round-robin's bookkeeping)."""
        still_open = [t for t in self.transports if not t.is_closing()]
        for _ in range(len(self.transports) - len(still_open)):
            self.acceptor.connection_closed()
        self.transports = still_open
        self.acceptor.flush()
        if self._has_room():
            self.acceptor.resume()


def _refuse_at_once(sock: socket.socket) -> None:
    """A connection the app will not serve: 503 if its request is there, then close."""
    try:
        if sock.recv(65536):
            sock.send(error_response(503, "the server is stopping"))
    except OSError:
        pass
    sock.close()
