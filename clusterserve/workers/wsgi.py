"""The WSGI worker's serving loop.

One event loop (the process's main thread) owns every connection that is
idle or still sending its request head.  A connection whose head is
complete waits in line (``ready``) for one of the ``threads`` app threads,
which reads its body, runs the app and writes the response, then hands it
back to the loop for keep-alive.  So a client that sends slowly never holds
an app thread, and while every app thread is busy the worker stops
accepting, leaving new connections to less busy workers.  Whenever a
thread frees up, the connections that queued on the listener meanwhile are
accepted first, so that keep-alive clients cannot keep a new connection
waiting.

A response that does not fit the socket's buffer lets go of its thread:
the loop writes the rest as the socket drains (``sending``), and the
request goes back in line (``ready``) to pull the app's iterable on once
all of it is out.  So a client that reads slowly holds no thread.

With ``--threads 1`` there is no pool: the loop thread runs each request
itself.  Handing a request to another thread and back costs two GIL
hand-overs and a wake-up; running it in place, the worker spends about a
third less CPU per request.  While a request runs, a watchdog thread
sends the heartbeats and notices a request stuck for longer than
``timeout``; such a worker is aborted, since no other thread can stop it.
"""

from __future__ import annotations

import enum
import heapq
import inspect
import queue
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

from clusterserve import access_log, descriptors, signals, tls
from clusterserve.dispatch import make_acceptor
from clusterserve.http.codecs import codec_factory
from clusterserve.http.connection import HeadLimits, HttpConnection, Phase, error_response
from clusterserve.http.environ import ErrorStream, ServerInfo, TrustedProxies
from clusterserve.http.errors import HttpError
from clusterserve.http.handler import Exchange, RequestContext, serve_request
from clusterserve.http.opening import Opening, OpeningFailed, OpeningPolicy
from clusterserve.http.response import ClientGone, FileWrapper
from clusterserve.logs import Throttled, log
from clusterserve.poller import Poller
from clusterserve.signals import SignalQueue
from clusterserve.worker_exits import ExitReason, Why
from clusterserve.workers.grace import FRESH_CONNECTION_GRACE, INTERRUPT_GRACE

if TYPE_CHECKING:
    from clusterserve.workers.base import Worker

# Without a `timeout` setting, the bound on one blocking read or write.
DEFAULT_IO_TIMEOUT = 30.0
# How often a busy loop looks for expired head deadlines and stuck requests.
DEADLINE_CHECK_EVERY = 0.1
# Connections closed at once (at most; a sixteenth of the limit) when the worker holds all
# it can and another arrives, as nginx reuses connections: the next ones then get in
# without a search each.
SHED_BATCH = 32


class Outcome(enum.Enum):
    """Where one step of serving a request (``serve_request``) left its connection."""

    KEEP_ALIVE = "keep-alive"  # the response is done; the connection can take another request
    CLOSE = "close"  # the response is done, or failed; the connection closes
    SENDING = "sending"  # the rest of the response waits for the socket to drain



class WsgiServer:
    def __init__(self, worker: Worker, app: Callable[..., Any]) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.threads = cfg.threads
        self.keepalive = float(cfg.keepalive)
        self.io_timeout = float(cfg.timeout) or DEFAULT_IO_TIMEOUT
        self.head_timeout = float(cfg.header_timeout)
        # worker_connections, or fewer when the open-file limit leaves less room.
        self.max_connections = descriptors.worker_connection_cap(cfg.worker_connections, worker.pid)
        self.shed_log = Throttled()
        self.codec = codec_factory(cfg.http)  # h11 unless httptools is asked for by name
        self.limits = HeadLimits(cfg.limit_request_line, cfg.limit_request_fields,
                                 cfg.limit_request_field_size, body=cfg.limit_request_body,
                                 refuse_underscores=cfg.header_map == "refuse")
        tls_context = tls.server_context(cfg.values)
        self.opening_policy = OpeningPolicy(cfg.proxy_protocol, TrustedProxies(cfg.proxy_allow_ips),
                                            tls_context, cfg.suppress_ragged_eofs)
        # Connections that start with a PROXY header or a TLS handshake: never handed
        # back to the arbiter, since the bytes read so far would be lost with them.
        self.openings: dict[HttpConnection, Opening] = {}
        self.context = RequestContext(
            app=app,
            info=ServerInfo(multithread=cfg.threads > 1, multiprocess=cfg.workers > 1,
                            proxies=TrustedProxies(cfg.forwarded_allow_ips),
                            file_wrapper=FileWrapper, url_scheme="https" if tls_context else "http",
                            secure_scheme_headers=cfg.secure_scheme_headers,
                            keep_underscores=cfg.header_map == "dangerous"),
            access_log=access_log.from_settings(cfg),
            keepalive=cfg.keepalive > 0,
            closing=lambda: self.stopping or self.stop_signalled or self.past_limit,
            worker=worker,
            errors=ErrorStream(),
            server_header=cfg.server_header,
            date_header=cfg.date_header,
        )
        self.poller = Poller()
        self.connections: set[HttpConnection] = set()  # every open connection
        self.waiting: set[HttpConnection] = set()  # owned by the loop
        # Work for an app thread, in order: a complete head's exchange, or one whose response
        # the socket drained (with the error to throw into it, when the client stopped reading).
        self.ready: deque[tuple[HttpConnection, Exchange, ClientGone | None]] = deque()
        self.sending: dict[HttpConnection, Exchange] = {}  # responses waiting for their socket
        self.in_app = 0  # requests on an app thread
        self.requests_taken = 0  # complete heads handed on to be served
        self.finished: queue.SimpleQueue[tuple[HttpConnection, Exchange, Outcome]] = queue.SimpleQueue()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="app",
                                       initializer=signals.keep_off_this_thread) \
            if self.threads > 1 else None  # None: requests run on the loop thread
        self.inline: HttpConnection | None = None  # its request runs on the loop thread now
        self.progress_at = time.monotonic()  # the loop's last turn or finished request
        self.heartbeat_at = 0.0  # the last heartbeat, sent by the loop or the watchdog
        self.starting = False  # _start_ready is running (an inline request may call back in)
        # Without a pool a connection's first request runs as it is accepted: take one
        # connection per wake-up, leaving the rest to workers that are free now.
        self.acceptor = make_acceptor(worker, self.poller, self._on_connection, self._has_room,
                                      self._can_hold, accept_batch=1 if self.pool is None else 0)
        self.stopping = False
        self.stop_signalled = False  # SIGTERM or SIGINT arrived; the loop may not have seen it yet
        self.interrupts = 0  # SIGINTs the loop has handled
        self.interrupts_arrived = 0  # SIGINTs that arrived (counted the moment they do)
        self.stop_deadline = float("inf")
        self.stuck: set[HttpConnection] = set()  # in the app for longer than `timeout`
        self.stuck_after = float(cfg.timeout) or float("inf")
        self.access_flushed_at = 0.0

    # -- the loop ---------------------------------------------------------

    def serve_forever(self) -> None:
        SignalQueue(self.poller, (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT,
                                  signal.SIGUSR1), self._on_signal, at_once=self._on_signal_at_once)
        self.poller.add(self.worker.channel.fileno(), self._on_channel)
        self.poller.add(self.wake_reader.fileno(), self._on_app_finished)
        self.acceptor.resume()
        self.worker.report_ready()
        if self.pool is None:
            threading.Thread(target=self._watch_inline_requests, name="watchdog", daemon=True).start()
        next_heartbeat = next_deadline_check = 0.0
        while not self._finished():
            now = self.progress_at = time.monotonic()
            if now >= self.stop_deadline:
                log.warning("worker %s: graceful timeout, %d connections still open",
                            self.worker.pid, len(self.connections))
                self._refuse_unstarted()
                break
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.worker.heartbeat_interval
                if self._has_room():
                    self.acceptor.sweep()
            if now >= next_deadline_check:  # seconds-long deadlines: not every turn under load
                self._expire_waiting(now)
                self._find_stuck(now)
                next_deadline_check = now + DEADLINE_CHECK_EVERY
            wake = min(next_heartbeat, self.stop_deadline, self._flush_access_log(now),
                       self.acceptor.resume_at or float("inf"))
            self.poller.poll(0.0 if self._can_start() else max(0.0, wake - now))
            self._start_ready()
            self.acceptor.flush()
        self._heartbeat()  # final counts, for the exit log line
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def _flush_access_log(self, now: float) -> float:
        """Flush the access lines the app threads wrote, at most every FLUSH_DELAY
        seconds; return when the next flush is due."""
        access = self.context.access_log
        if access is None or not access.unflushed:
            return float("inf")
        if now >= self.access_flushed_at + access_log.FLUSH_DELAY:
            access.flush()
            self.access_flushed_at = now
            return float("inf")
        return self.access_flushed_at + access_log.FLUSH_DELAY

    def _heartbeat(self) -> None:
        self.heartbeat_at = time.monotonic()
        self.worker.heartbeat(self.acceptor.accepted, len(self.connections), self.in_app)

    def _finished(self) -> bool:
        """Stopping, and nothing left but stuck requests (and nothing more on its way)."""
        if not (self.stopping and self.connections <= self.stuck):
            return False
        self._on_channel()  # round-robin: a connection the arbiter passed may be waiting
        return self.connections <= self.stuck

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self.begin_stop("received SIGTERM")
        elif signum == signal.SIGINT:
            self._on_interrupt()
        elif signum == signal.SIGABRT:
            self.worker.abort()
        elif signum == signal.SIGUSR1:
            self.worker.reopen_logs()
        else:
            self.fast_stop("received SIGQUIT")

    def _on_interrupt(self) -> None:
        """SIGINT (Ctrl-C): the first is a graceful stop bounded by INTERRUPT_GRACE,
        the second a fast stop."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.fast_stop("a second SIGINT")
        self.worker.interrupted()
        self.begin_stop("received SIGINT", within=INTERRUPT_GRACE)

    def _on_signal_at_once(self, signum: int) -> None:
        """The moment a signal arrives, even during a request on the loop thread: a
        stop that begins then still closes that response's connection, and a fast
        stop or an abort does not wait for the request to end."""
        if signum == signal.SIGINT:
            self.interrupts_arrived += 1
        if signum == signal.SIGTERM or (signum == signal.SIGINT and self.interrupts_arrived == 1):
            self.stop_signalled = True
        elif self.inline is not None and signum != signal.SIGUSR1:
            if signum == signal.SIGINT:
                self.fast_stop("a second SIGINT")
            self._on_signal(signum)  # raises SystemExit out of the app

    def fast_stop(self, reason: str) -> NoReturn:
        """SIGQUIT or a second SIGINT: requests the app has not started get 503, the ones
        it runs are cut (never answered 503: the client could retry what took effect)."""
        log.info("worker %s stopping at once: %s", self.worker.pid, reason)
        if not self.acceptor.closed:
            self.acceptor.close()  # what is queued is answered 503 rather than reset
            self._on_channel()
        self._refuse_unstarted()
        self.worker.interrupt()

    def _refuse_unstarted(self) -> None:
        """Answer 503 with Connection: close to every request the app has not started."""
        stopping = HttpError(503, "the server is stopping")
        while self.ready:
            connection, exchange, _ = self.ready.popleft()
            if inspect.getgeneratorstate(exchange) == inspect.GEN_CREATED:
                self._refuse(connection, stopping)
            else:
                self._close(connection)  # its response had begun: cut, as the ones the app runs
        for connection in list(self.waiting):
            opening = self.openings.get(connection)
            if opening is None or opening.done:
                connection.read_available()
            if connection.received_any and (opening is None or opening.done):
                self._refuse(connection, stopping)
            else:
                self._close(connection)

    def _on_channel(self) -> None:
        messages = self.worker.channel.receive()
        if messages is None:
            self.poller.remove(self.worker.channel.fileno())
            self.begin_stop("the arbiter is gone")
            return
        self.acceptor.on_messages(messages)
        self.acceptor.flush()

    def begin_stop(self, reason: str, within: float | None = None) -> None:
        """Stop accepting now, finish in-flight requests, then leave the loop; ``within``
        bounds the stop more tightly than graceful_timeout (a stop under way too)."""
        deadline = self.worker.graceful_deadline()
        if within is not None:
            deadline = min(deadline, time.monotonic() + within)
        if self.stopping:
            self.stop_deadline = min(self.stop_deadline, deadline)
            return
        log.info("worker %s stopping: %s", self.worker.pid, reason)
        self.stopping = True
        self.stop_deadline = deadline
        self.acceptor.close(leave_queued=self.past_limit)
        # What the arbiter sent before the signal: connections (a closed acceptor takes
        # them, to answer with Connection: close) and may_hand_back.
        self._on_channel()
        fresh_deadline = time.monotonic() + FRESH_CONNECTION_GRACE
        for connection in list(self.waiting):
            opening = self.openings.get(connection)
            if opening is not None and not opening.done:
                connection.deadline = min(connection.deadline, fresh_deadline)
                continue
            connection.read_available()  # a request may have arrived since the last poll
            if connection.received_any:
                self._advance(connection)  # serve it, with Connection: close
                continue
            if not connection.served and opening is None and self.acceptor.hand_back(
                    connection.sock, connection.peer):
                self._close(connection, handed_back=True)  # another worker will serve it
            else:
                # Idle, new or kept alive: closing it now would fail a request the
                # client may be sending this instant.  It gets a moment (a request
                # then is answered with Connection: close), and closes if it stays idle.
                connection.deadline = min(connection.deadline, fresh_deadline)

    # -- connections waiting for a request head ------------------------------

    def _has_room(self) -> bool:
        return self.in_app < self.threads and self._can_hold()

    def _can_hold(self) -> bool:
        """Not stopping, and room for one more connection, or an idle one to shed for it."""
        if self.stopping or self.past_limit:
            return False
        return len(self.connections) < self.max_connections or any(map(self._is_silent, self.waiting))

    def _is_silent(self, connection: HttpConnection) -> bool:
        """No bytes of a request so far (new, or idle after a response): sheddable."""
        return not connection.received_any

    def _shed(self) -> None:
        """At the limit: close the connections that have sent nothing for the longest, so
        that a new one, which may carry a request, gets in.  One whose bytes have arrived
        since the loop last looked is spared."""
        batch = min(SHED_BATCH, max(1, self.max_connections // 16))
        oldest = heapq.nsmallest(2 * batch, filter(self._is_silent, self.waiting),
                                 key=lambda c: c.quiet_since)
        arrived = select.poll()
        for connection in oldest:
            arrived.register(connection.fileno(), select.POLLIN)
        spoken = {fd for fd, _ in arrived.poll(0)}
        shed = [c for c in oldest if c.fileno() not in spoken][:batch]
        for connection in shed:
            self._close(connection)
        if shed:
            self.shed_log.warning("worker %s holds %d connections, its limit: closed the %d that "
                                  "had sent nothing for the longest", self.worker.pid,
                                  self.max_connections, len(shed))

    @property
    def past_limit(self) -> bool:
        """The worker has taken ``max_requests`` requests (plus its jitter): it accepts no
        more connections, and every response from now on closes its connection."""
        return 0 < self.worker.max_requests <= self.requests_taken

    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        if len(self.connections) >= self.max_connections:
            self._shed()
        sock.setblocking(False)
        connection = HttpConnection(sock, peer, self.limits, self.io_timeout, self.codec)
        self.connections.add(connection)
        opening = self.opening_policy.opening_for(sock, peer)
        if opening is not None:
            self.openings[connection] = opening
        wait = FRESH_CONNECTION_GRACE if self.stopping else self.head_timeout
        self._wait_for_head(connection, time.monotonic() + wait)
        self._on_readable(connection)  # a client usually sends its request at once
        if not self._has_room():
            self.acceptor.pause()

    def _wait_for_head(self, connection: HttpConnection, deadline: float) -> None:
        connection.deadline = deadline
        self.waiting.add(connection)
        if connection.fileno() not in self.poller:  # without a pool it stays registered
            self.poller.add(connection.fileno(), lambda: self._on_readable(connection))

    def _on_readable(self, connection: HttpConnection) -> None:
        opening = self.openings.get(connection)
        if opening is not None and not opening.done:
            self._open(connection, opening)
            return
        had_bytes = connection.received_any
        connection.read_available()
        if connection.received_any and not had_bytes:
            connection.deadline = time.monotonic() + self.head_timeout
        self._advance(connection)

    def _open(self, connection: HttpConnection, opening: Opening) -> None:
        """One step of a PROXY header or TLS handshake; then the connection speaks HTTP."""
        try:
            done = opening.advance()
        except OpeningFailed as err:
            log.debug("closing a connection from %s: %s", connection.peer, err)
            done = None
        connection.sock = opening.sock  # wrapped for TLS: the connection closes what is open
        if done is None:
            self._close(connection)
        if not done:
            return
        connection.peer = opening.peer
        if opening.leftover:
            connection.receive(opening.leftover)
        # Request bytes may be buffered already (in the TLS layer, or as leftover).
        self._on_readable(connection)

    def _advance(self, connection: HttpConnection) -> None:
        """Hand a complete head to an app thread, refuse a bad one, or keep waiting."""
        try:
            request = connection.next_request()
        except HttpError as err:
            self._refuse(connection, err)
            return
        except ConnectionResetError:
            self._close(connection)
            return
        if request is None:
            return
        self.waiting.discard(connection)
        self.requests_taken += 1
        if self.pool is not None:
            # Not watched while an app thread owns it.  (Without a pool, requests run
            # before the loop polls again: leaving it registered saves two epoll_ctl.)
            self.poller.remove(connection.fileno())
        self.ready.append((connection, serve_request(connection, request, self.context), None))
        self._start_ready()

    def _start_ready(self) -> None:
        """Hand complete requests to free app threads (or run them here, without a pool),
        in the order their heads completed.

        Only those ready now: without a pool, each request that ends can make more
        ready (a connection accepted, a pipelined request), and serving those too
        would keep the loop from signals, deadlines and its other connections for
        as long as clients keep coming.  They go at the next loop turn.
        """
        if self.starting:
            return  # the end of an inline request: what it added waits for the next turn
        self.starting = True
        try:
            for _ in range(len(self.ready)):
                if self.in_app >= self.threads:
                    break
                connection, exchange, error = self.ready.popleft()
                connection.start_blocking()
                self.in_app += 1
                if self.pool is not None:
                    self.pool.submit(self._run_request, connection, exchange, error)
                else:
                    self._run_inline(connection, exchange, error)
        finally:
            self.starting = False
        if not self._has_room():
            self.acceptor.pause()

    def _can_start(self) -> bool:
        return bool(self.ready) and self.in_app < self.threads

    def _refuse(self, connection: HttpConnection, err: HttpError) -> None:
        log.debug("refusing request from %s: %s %s", connection.peer, err.status, err)
        try:
            connection.sock.send(error_response(err.status, err.detail))
        except OSError:
            pass
        self._close(connection)

    def _expire_waiting(self, now: float) -> None:
        for connection in [c for c in self.waiting if c.deadline <= now]:
            if connection.received_any:
                self._refuse(connection, HttpError(408, "request head not received in time"))
            else:
                self._close(connection)
        for connection in [c for c in self.sending if c.deadline <= now]:
            self._resume(connection, ClientGone(f"the client read nothing for {self.io_timeout:g}s"))

    def _find_stuck(self, now: float) -> None:
        """A request in the app for longer than ``timeout`` retires the worker (after a
        replacement is ready and the other requests are done): it cannot be interrupted."""
        for connection in self.connections - self.waiting - self.stuck:
            if connection.phase is Phase.IN_APP and self._is_stuck(connection, now):
                self.stuck.add(connection)
                self._retire_for(connection)

    def _is_stuck(self, connection: HttpConnection, now: float) -> bool:
        return now - connection.app_started > self.stuck_after

    def _retire_for(self, connection: HttpConnection) -> None:
        self.worker.ask_to_retire(self._stuck_reason(connection))

    def _stuck_reason(self, connection: HttpConnection) -> Why:
        return Why(ExitReason.STUCK_REQUEST,
                   f"a request from {connection.peer} has run for more than {self.stuck_after:g}s")

    def _close(self, connection: HttpConnection, handed_back: bool = False) -> None:
        """Close a connection (the arbiter counts a handed-back one itself)."""
        self.waiting.discard(connection)
        self.sending.pop(connection, None)
        if connection.fileno() in self.poller:
            self.poller.remove(connection.fileno())
        self.connections.discard(connection)
        self.openings.pop(connection, None)
        self.stuck.discard(connection)
        connection.close(handed_back=handed_back)
        if not handed_back:
            self.acceptor.connection_closed()
        if self._has_room():
            self.acceptor.resume()

    # -- responses waiting for their socket to drain ------------------------------

    def _send_later(self, connection: HttpConnection, exchange: Exchange) -> None:
        """The socket took what it could: the loop writes the rest as it drains, and the
        request goes on (the app's iterable pulled again) only once all of it is out."""
        connection.wait_to_send(time.monotonic() + self.io_timeout)
        self.sending[connection] = exchange
        fd = connection.fileno()
        if fd in self.poller:  # without a pool it stays registered for reading
            self.poller.remove(fd)
        self.poller.add(fd, lambda: self._on_writable(connection), writable=not connection.waits_for_read)

    def _on_writable(self, connection: HttpConnection) -> None:
        try:
            written = connection.write_some()
        except OSError as err:
            self._resume(connection, ClientGone(str(err)))
            return
        if written:
            connection.deadline = time.monotonic() + self.io_timeout
        if not connection.unsent:
            self._resume(connection, None)

    def _resume(self, connection: HttpConnection, error: ClientGone | None) -> None:
        """Back in line for an app thread, to go on with the response (or to end it, with
        ``error``, when the client is gone)."""
        self.poller.remove(connection.fileno())
        self.ready.append((connection, self.sending.pop(connection), error))
        self._start_ready()

    # -- app threads -----------------------------------------------------------

    def _step(self, connection: HttpConnection, exchange: Exchange, error: ClientGone | None) -> Outcome:
        """Serve a request until its response is done or must wait for the socket."""
        try:
            if error is None:
                next(exchange)
            else:
                exchange.throw(error)
        except StopIteration as done:
            return Outcome.KEEP_ALIVE if done.value else Outcome.CLOSE
        except Exception:  # noqa: BLE001 - never lose a connection to a bug
            log.exception("unexpected error serving a request")
            return Outcome.CLOSE
        return Outcome.SENDING

    def _run_request(self, connection: HttpConnection, exchange: Exchange, error: ClientGone | None) -> None:
        """On an app thread: one step of a request, then hand the connection back."""
        self.finished.put((connection, exchange, self._step(connection, exchange, error)))
        try:
            self.wake_writer.send(b"\0")
        except BlockingIOError:
            pass  # the loop has wake-ups pending already

    def _run_inline(self, connection: HttpConnection, exchange: Exchange, error: ClientGone | None) -> None:
        """Without a pool: one step of a request on the loop thread, then take the connection back."""
        self.acceptor.flush()  # round-robin: "no room" (and the acks) before the loop blocks
        self.inline = connection
        try:
            outcome = self._step(connection, exchange, error)
        finally:
            self.inline = None
            self.progress_at = time.monotonic()
        self._take_back([(connection, exchange, outcome)])

    def _watch_inline_requests(self) -> None:
        """The watchdog thread (no pool): when the loop is busy with requests and its
        heartbeat is due, send it.  A request stuck on the loop thread leaves no thread
        to stop the worker with, so the worker asks to be aborted, as gunicorn aborts a
        sync worker at ``timeout``.  A loop that neither serves nor turns gets no
        heartbeat: the arbiter then aborts it too."""
        signals.keep_off_this_thread()
        interval = self.worker.heartbeat_interval
        while not self.stopping or self.connections:
            time.sleep(interval)
            connection, now = self.inline, time.monotonic()
            busy = connection is not None or now - self.progress_at <= interval
            if busy and now - self.heartbeat_at >= interval:
                self._heartbeat()
            if connection is not None and self._is_stuck(connection, now):
                self.worker.ask_to_be_aborted(self._stuck_reason(connection))

    def _on_app_finished(self) -> None:
        try:
            self.wake_reader.recv(4096)  # every wake-up byte so far; a later one wakes us again
        except BlockingIOError:
            pass
        finished = []
        while True:
            try:
                finished.append(self.finished.get_nowait())
            except queue.Empty:
                break
        self._take_back(finished)

    def _take_back(self, finished: list[tuple[HttpConnection, Exchange, Outcome]]) -> None:
        """Steps are done: keep the connections alive, close them, or write the rest of
        their responses as their sockets drain; and go on."""
        kept = []
        for connection, exchange, outcome in finished:
            self.in_app -= 1
            self.stuck.discard(connection)
            if outcome is Outcome.SENDING:
                self._send_later(connection, exchange)
                continue
            self.worker.requests_served += 1
            if outcome is Outcome.KEEP_ALIVE and not self.stopping and connection.phase is Phase.IN_APP:
                connection.back_to_loop()
                wait = self.head_timeout if connection.received_any else self.keepalive
                self._wait_for_head(connection, time.monotonic() + wait)
                kept.append(connection)
            else:
                self._close(connection)
        if self._has_room():
            # A thread is free: connections that queued on the listener while every
            # thread was busy get in line now, before the next request of a connection
            # held here (whose readiness could otherwise come first in the next poll).
            self.acceptor.accept_queued()
        for connection in kept:
            self._advance(connection)  # a pipelined request may be buffered already
        self._start_ready()
        if self.worker.max_requests and self.worker.requests_served >= self.worker.max_requests:
            self.worker.ask_to_retire(Why(ExitReason.MAX_REQUESTS,
                                          f"served {self.worker.requests_served} requests"))
        if self._has_room():
            self.acceptor.resume()
