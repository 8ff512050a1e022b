"""The arbiter: binds, forks, reaps, and turns signals into transitions.

It is single-threaded and never imports the app (unless ``preload_app``),
so every fork is clean.  One loop waits on the signal wakeup socket and on
each worker's channel; after every wake-up, ``_tick`` brings the world in
line with the current state:

    RUNNING --TERM--> STOPPING (graceful) --all workers gone--> DONE
    RUNNING --INT/QUIT--> HALTING (fast)  --all workers gone--> DONE
    STOPPING --INT/QUIT--> HALTING

While RUNNING, a HUP starts a reload: the config is read again and a new
generation of workers starts beside the old one.  When every new worker is
ready the old generation is retired gracefully; if one fails to boot, the
new generation is stopped and the old one keeps serving.  A HUP during a
reload replaces the generation still booting with a newer one.

A worker that must go (max_requests, a stuck request, max_worker_memory)
is replaced first and stopped once its replacement is ready.  USR2 execs a
new arbiter on the same sockets; WINCH stops every worker and keeps the
arbiter.  A first-generation worker that cannot load the app halts the
server with the load error (exit code 3) instead of forking again and again.
"""

from __future__ import annotations

import enum
import gc
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterserve import __version__, daemon, descriptors, logs, process, reloader, signals, systemd, tls, upgrade
from clusterserve import app as app_loader
from clusterserve.channel import ADOPT, BOOT_ERROR, HEARTBEAT, MAY_HAND_BACK, READY, RELEASE, RETIRE, Channel
from clusterserve.config import Config, ConfigError, load_config
from clusterserve.config.settings import WORKER_CLASSES
from clusterserve.control.control_socket import ControlSocket
from clusterserve.control.request_stats import RequestStats
from clusterserve.control.statsd import StatsdClient
from clusterserve.control.status import ServerStatus, worker_statuses
from clusterserve.dispatch import reuseport
from clusterserve.dispatch.round_robin import RoundRobinDispatcher
from clusterserve.hooks import run_hook
from clusterserve.poller import Poller
from clusterserve.signals import SignalQueue
from clusterserve.sockets import (BindError, Listener, TcpAddress, adopt_inherited, bind_all,
                                  bind_reuseport, parse_address)
from clusterserve.worker_exits import ExitReason, Why, exit_line, exit_status, unasked
from clusterserve.workers.base import EXIT_BOOT_ERROR, EXIT_CONFIG_ERROR, Worker, resolve_interface
from clusterserve.workers.grace import INTERRUPT_GRACE

EXIT_OK = 0
EXIT_FAILURE = 1
# A worker that failed to boot exits with one of these: its app cannot load, or a setting contradicts it.
BOOT_ERROR_CODES = (EXIT_BOOT_ERROR, EXIT_CONFIG_ERROR)

# A worker killed for a missed heartbeat gets this long after SIGABRT before SIGKILL.
ABORT_GRACE = 2.0
# A fast stop waits at most this long (or graceful_timeout, if shorter) before SIGKILL.
FAST_STOP_GRACE = 5.0
# After the first SIGINT's bound, workers still running get this long to stop by
# themselves (they got SIGINT from the terminal too) before the arbiter sends SIGQUIT.
INTERRUPT_MARGIN = 1.0
# A worker that dies sooner than this after it started counts as a crash for back-off.
HEALTHY_UPTIME = 5.0
MAX_BACKOFF = 30.0
TICK = 1.0
# While only connections and their acknowledgements flow, housekeeping (reaping,
# heartbeats, respawns) runs this often rather than after every loop turn.
HOUSEKEEPING_EVERY = 0.1
# In round-robin mode, a worker this late on its heartbeat gets no new connections.
LATE_HEARTBEAT = 2.0
MIB = 1024 * 1024

# Settings a HUP cannot change: the sockets and how they are shared, a preloaded app,
# the arbiter's own control and metrics endpoints, and its open-file limit.
FIXED_FOR_LIFE = ("bind", "backlog", "reuse_port", "dispatch", "preload_app", "control_socket",
                  "control_socket_mode", "control_socket_disable", "metrics_bind", "rlimit_nofile")



class State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # graceful: in-flight requests finish
    HALTING = "halting"  # fast: workers exit at once
    DONE = "done"


@dataclass
class WorkerHandle:
    """What the arbiter knows about one worker process."""

    age: int
    channel: Channel
    pid: int = 0
    started: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)
    ready: bool = False
    retiring: bool = False
    stop_when_replaced: bool = False  # retiring, but serving until a replacement is ready
    kill_at: float | None = None  # SIGKILL if still alive by then
    boot_error: str | None = None
    why: Why | None = None  # why the arbiter stops it, once it decided to
    slot: int | None = None  # reuseport mode: whose sockets it accepts on
    generation: int = 1
    # From its heartbeats:
    requests: int = 0
    accepted: int = 0
    open_connections: int = 0
    in_flight: int = 0
    stats: RequestStats = field(default_factory=RequestStats)


@dataclass
class Reload:
    """A HUP in progress: the generation booting, and what to go back to if it fails."""

    generation: int
    previous_cfg: Config
    previous_workers: int


class Arbiter:
    def __init__(self, cfg: Config, argv: Sequence[str] = (),
                 detached: daemon.Detached | None = None) -> None:
        self.cfg = cfg
        self.argv = list(argv)  # read again on HUP, exec'd again on USR2
        self.detached = detached  # daemon: told once the first workers are ready
        self.start_directory = os.getcwd()  # before any chdir setting, for USR2
        self.successor: upgrade.Successor | None = None  # USR2: the new arbiter, until ready
        self.ready_pipe: int | None = None  # USR2: how this arbiter tells its predecessor
        self.handed_over = False  # USR2 done: the sockets belong to the new arbiter
        self.watcher_pid: int | None = None  # --reload: the process watching files
        self.generation = 1
        self.reload: Reload | None = None
        self.log = logs.log
        self.pid = os.getpid()
        self.state = State.RUNNING
        self.exit_code = EXIT_OK
        self.num_workers = cfg.workers
        self.scaled: int | None = None  # the count TTIN, TTOU or ctl scale set; kept across HUP
        self.workers: dict[int, WorkerHandle] = {}
        self.listeners: list[Listener] = []
        self.app: Any = None
        self.poller = Poller()
        self.signals: SignalQueue | None = None
        self.dispatcher: RoundRobinDispatcher | None = None
        self.slots: reuseport.SlotTable | None = None
        self.next_age = 1
        self.ever_ready = False
        self.announced_ready = False
        self.crash_streak = 0
        self.respawn_at = 0.0
        self.stop_deadline = float("inf")
        self.interrupts = 0  # SIGINTs received
        self.escalate_at_deadline = False  # a SIGINT stop: at its deadline, a fast stop
        self.started = time.monotonic()
        self.control: ControlSocket | None = None
        self.metrics: Any = None  # control.prometheus.MetricsEndpoint, when metrics_bind is set
        self.statsd: StatsdClient | None = None
        self.restarts: Counter[str] = Counter()  # workers replaced, by reason
        self.gone_workers_requests = RequestStats()  # the last totals of every exited worker
        self.worker_news = False  # a worker said something that housekeeping should act on
        self.next_housekeeping = 0.0

    # -- start and run --------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        try:
            if not self._start():
                return self.exit_code
            while self.state is not State.DONE:
                try:
                    news = self.poller.poll(self._poll_timeout())
                    if news or self.worker_news or time.monotonic() >= self.next_housekeeping:
                        self._tick()
                except Exception:
                    if self.state is not State.RUNNING:
                        raise
                    # A bug here must not orphan the workers: stop them cleanly.
                    self.log.exception("arbiter error; stopping the server")
                    self.exit_code = EXIT_FAILURE
                    self._begin_stop(graceful=True)
        finally:
            self._cleanup()
        return self.exit_code

    def _start(self) -> bool:
        cfg = self.cfg
        os.umask(cfg.umask)
        if cfg.rlimit_nofile:
            descriptors.raise_limit(cfg.rlimit_nofile)  # checked as the setting was read
        app_loader.prepare_environment(cfg)
        run_hook(self.cfg, "on_starting", self)
        try:
            shown = self._bind()
        except BindError as err:
            self.log.error("%s", err)
            self.exit_code = EXIT_FAILURE
            return False
        self._chown_unix_sockets()
        if cfg.pidfile:
            try:
                with open(cfg.pidfile, "w", encoding="ascii") as stream:
                    stream.write(f"{self.pid}\n")
            except OSError as err:
                self.log.error("cannot write pidfile %s: %s", cfg.pidfile, err.strerror)
                self.exit_code = EXIT_FAILURE
                return False
        process.set_title(f"{cfg.proc_name or 'clusterserve'}: arbiter [{cfg.wsgi_app}]")
        self.log.info("Starting clusterserve %s", __version__)
        self._log_config_file()
        https = tls.tls_enabled(cfg.values)
        for listener in shown:
            url = listener.url
            if https and url.startswith("http://"):
                url = "https://" + url.removeprefix("http://")
            self.log.info("Listening at: %s (%s)", url, self.pid)
        if cfg.preload_app and not self._preload():
            return False
        self.log.info("Dispatch: %s, workers: %d, %sapp: %s, interface: %s", cfg.dispatch,
                      cfg.workers, self._threads_shown(), cfg.wsgi_app, self._interface())
        if self.slots is not None:
            self.log.info("reuseport: %s", reuseport.migration_note())
        # What exists now (the arbiter's own modules, a preloaded app) stays out of
        # the collector's way in the workers, so its pages are not copied when a
        # worker's first collection walks it: a measured 10.8 -> 5.6 MiB USS per worker.
        gc.collect()
        gc.freeze()
        self.ready_pipe = upgrade.take_ready_pipe()
        if not self._open_endpoints():
            return False
        self.signals = SignalQueue(self.poller, signals.ARBITER_SIGNALS, self._on_signal)
        if cfg.dispatch == "round-robin":
            self.dispatcher = RoundRobinDispatcher(self.listeners, self.poller, cfg.backlog,
                                                   self._may_take_connections)
            self.dispatcher.start()
        for _ in range(self.num_workers):
            self._spawn()
        if cfg.reload:
            engine = reloader.resolve_engine(cfg.reload_engine)
            self.watcher_pid = reloader.start_watcher(
                self.pid, [os.getcwd(), *cfg.pythonpath], cfg.reload_extra_files, engine,
                forget_arbiter=lambda: self._forget_in_child(keep=[]))
            self.log.info("Reload on file changes is on (%s); for development only", engine)
        return True

    def _open_endpoints(self) -> bool:
        """The control socket and the metrics endpoint, if configured; False if one cannot bind."""
        cfg = self.cfg
        try:
            if cfg.control_socket and not cfg.control_socket_disable:
                if self.ready_pipe is not None:  # a USR2 successor takes the path over
                    _remove_file(cfg.control_socket)
                self.control = ControlSocket(cfg.control_socket, cfg.control_socket_mode,
                                             self.poller, self)
                self.log.info("Control socket: %s (clusterserve ctl)", cfg.control_socket)
            if cfg.metrics_bind:
                from clusterserve.control.prometheus import MetricsEndpoint

                address = parse_address(cfg.metrics_bind)
                assert isinstance(address, TcpAddress)
                # SO_REUSEPORT: after a USR2, the old and the new arbiter both hold the port.
                listener = bind_reuseport(address, backlog=16)
                self.metrics = MetricsEndpoint(listener.sock, self.poller, self.status)
                self.log.info("Metrics at: %s/metrics", listener.url)
        except BindError as err:
            self.log.error("%s", err)
            self.exit_code = EXIT_FAILURE
            return False
        self._start_statsd()
        return True

    def _start_statsd(self) -> None:
        if self.statsd is not None:
            self.statsd.close()
        cfg = self.cfg
        self.statsd = StatsdClient(cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags) \
            if cfg.statsd_host else None

    def _close_endpoints(self, remove_files: bool) -> None:
        if self.control is not None:
            self.control.close(remove_file=remove_files)
            self.control = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.statsd is not None:
            self.statsd.close()
            self.statsd = None

    def _bind(self) -> list[Listener]:
        """Bind every address (every slot's, in reuseport mode); return one listener per address."""
        addresses = [parse_address(b) for b in self.cfg.bind]
        if self.cfg.dispatch != "reuseport":
            self.listeners = bind_all(addresses, self.cfg.backlog, reuse_port=self.cfg.reuse_port)
            return self.listeners
        inherited = adopt_inherited()
        if inherited:  # from a USR2 predecessor
            self.slots = reuseport.SlotTable.adopt(inherited, self.cfg.backlog)
        else:
            self.slots = reuseport.SlotTable(addresses, self.cfg.backlog)  # type: ignore[arg-type]
            self.slots.create(self.num_workers)
        return self.slots.first_slot()

    def _all_listeners(self) -> list[Listener]:
        return self.slots.listeners() if self.slots is not None else self.listeners

    def _preload(self) -> bool:
        try:
            self.app = app_loader.load_configured_app(self.cfg)
            warning = app_loader.factory_warning(self.cfg, self.app)
            if warning is not None:
                self.log.warning("%s", warning)
            resolve_interface(self.cfg, self.app)
        except app_loader.InterfaceMismatch as err:
            self.log.error("%s", err)
            self.exit_code = EXIT_CONFIG_ERROR
            return False
        except Exception as err:  # noqa: BLE001 - report the user's error and stop
            self.log.exception("cannot load app %r: %s", self.cfg.wsgi_app, err)
            self.exit_code = EXIT_BOOT_ERROR
            return False
        return True

    def _log_config_file(self) -> None:
        """Which config file was read, and the gunicorn settings in it without effect here."""
        if self.cfg.config is None:
            self.log.info("Config file: none (defaults, environment and command line)")
        else:
            found = " (found in the working directory)" if self.cfg.sources["config"] == "working directory" else ""
            self.log.info("Config file: %s%s", self.cfg.config, found)
        for note in self.cfg.notes:
            self.log.info("%s", note)

    def _threads_shown(self) -> str:
        """The banner's threads: WSGI workers have app threads, ASGI ones do not."""
        interface = self._interface()
        if interface == "asgi":
            return ""
        if interface == "wsgi":
            return f"threads: {self.cfg.threads}, "
        return f"threads: {self.cfg.threads} if WSGI, "

    def _interface(self) -> str:
        """The interface, as far as the arbiter knows it without importing the app."""
        if self.app is not None or self.cfg.interface != "auto" or \
                WORKER_CLASSES[self.cfg.worker_class] == "asgi":
            return resolve_interface(self.cfg, self.app)
        return "auto (each worker detects it)"

    def _chown_unix_sockets(self) -> None:
        if self.cfg.user is None and self.cfg.group is None:
            return
        for listener in self.listeners:
            if listener.sock.family == socket.AF_UNIX:
                os.chown(listener.sock.getsockname(), self.cfg.user if self.cfg.user is not None else -1,
                         self.cfg.group if self.cfg.group is not None else -1)

    # -- workers ----------------------------------------------------------

    def _spawn(self, successor_of: WorkerHandle | None = None) -> WorkerHandle:
        """Fork a worker of the current generation (taking over ``successor_of``'s slot)."""
        arbiter_end, worker_end = Channel.pair()
        handle = WorkerHandle(age=self.next_age, channel=arbiter_end, generation=self.generation)
        self.next_age += 1
        listeners = self._claim_listeners(handle, successor_of)
        run_hook(self.cfg, "pre_fork", self, handle)
        pid = signals.fork_with_signals_held()
        if pid == 0:
            arbiter_end.close()
            worker = Worker(self.cfg, handle.age, listeners, worker_end, self, self.app)
            worker.run(forget_arbiter=lambda: self._forget_in_child(listeners))
        worker_end.close()
        handle.pid = pid
        self.workers[pid] = handle
        if self.dispatcher is not None:
            self.dispatcher.add_worker(pid, arbiter_end)
        if self.slots is not None:
            for slot in self.slots.lent():
                arbiter_end.send(ADOPT, fds=slot.fds, slot=slot.number)
        self.poller.add(arbiter_end.fileno(), lambda: self._on_worker_message(handle), routine=True)
        self.log.info("Booting worker %d with pid %d", handle.age, pid)
        return handle

    def _claim_listeners(self, handle: WorkerHandle, successor_of: WorkerHandle | None) -> list[Listener]:
        """The listening sockets a new worker accepts on itself."""
        if self.dispatcher is not None:
            return []
        if self.slots is None:
            return self.listeners
        if successor_of is not None and successor_of.slot is not None:
            # A reload: both accept on the slot until the old worker retires.
            handle.slot = successor_of.slot
            return self.slots.listeners_of(successor_of.slot)
        slot, was_lent = self.slots.claim()
        handle.slot = slot.number
        if was_lent:
            self._tell_workers(RELEASE, slot=slot.number)
        return slot.listeners

    def _tell_workers(self, kind: str, fds: list[int] | None = None, **fields: Any) -> None:
        for handle in self.workers.values():
            if not handle.retiring and not handle.channel.send(kind, fds=fds or (), **fields):
                self.log.warning("cannot tell worker %d (pid %d) %s", handle.age, handle.pid, kind)

    def _forget_in_child(self, keep: list[Listener]) -> None:
        """In a new worker: drop the arbiter's loop, signal socket, channels and
        the listeners the worker does not accept on, so they close with the arbiter."""
        if self.signals is not None:
            self.signals.close()
        self.poller.close()
        for handle in self.workers.values():
            handle.channel.close()
        for listener in self._all_listeners():
            if listener not in keep:
                listener.sock.close()
        self._close_endpoints(remove_files=False)
        if self.detached is not None:
            self.detached.close_in_child()

    def _on_worker_message(self, handle: WorkerHandle) -> None:
        messages = handle.channel.receive()
        if messages is None:
            self.poller.remove(handle.channel.fileno())
            self.worker_news = True
            return
        now = time.monotonic()
        for message in messages:
            if self.dispatcher is not None and self.dispatcher.on_message(handle.pid, message):
                continue
            self.worker_news = self.worker_news or message.kind != HEARTBEAT
            if message.kind == HEARTBEAT:
                handle.last_heartbeat = now
                handle.requests = _count(message.fields.get("requests"))
                handle.accepted = _count(message.fields.get("accepted"))
                handle.open_connections = _count(message.fields.get("open"))
                handle.in_flight = _count(message.fields.get("in_flight"))
                if message.fields.get("stats") is not None:
                    handle.stats = RequestStats.from_message(message.fields["stats"])
            elif message.kind == READY:
                handle.ready = True
                handle.last_heartbeat = now
                self.ever_ready = True
                self.crash_streak = 0
                self.log.info("Worker %d (pid %d) ready, serving %s", handle.age, handle.pid,
                              str(message.fields.get("interface", "")).upper())
            elif message.kind == BOOT_ERROR:
                handle.boot_error = str(message.fields.get("error", "unknown error"))
            elif message.kind == RETIRE and self.state is State.RUNNING:
                self._replace(handle, Why(ExitReason(message.fields["reason"]),
                                          str(message.fields.get("detail", ""))))
            for fd in message.fds:
                os.close(fd)
        self._dispatch()

    def _dispatch(self) -> None:
        if self.dispatcher is None:
            return
        if self.state is State.RUNNING and not self.handed_over:
            self.dispatcher.dispatch()
        elif self.state is not State.HALTING:
            self.dispatcher.pass_all()  # stopping, or the workers of a replaced arbiter

    def _may_take_connections(self, pid: int) -> bool:
        """Round-robin: only ready workers that are not retiring and not late on heartbeats."""
        handle = self.workers.get(pid)
        return (handle is not None and handle.ready and not handle.retiring
                and time.monotonic() - handle.last_heartbeat < LATE_HEARTBEAT)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is not None:
                self._worker_exited(handle, os.waitstatus_to_exitcode(status))
            elif self.successor is not None and pid == self.successor.pid:
                self._upgrade_failed(f"it exited with code {os.waitstatus_to_exitcode(status)}")
            # anything else: an orphan we adopted as PID 1, or a stray child

    def _worker_exited(self, handle: WorkerHandle, code: int) -> None:
        if handle.channel.fileno() in self.poller:
            self._on_worker_message(handle)  # read what it said last
            self.poller.remove(handle.channel.fileno())
        handle.channel.close()
        self.gone_workers_requests.add(handle.stats)
        if self.dispatcher is not None:
            self.dispatcher.remove_worker(handle.pid)
            self._dispatch()
        if not handle.retiring:
            self._lend_slot(handle)  # reuseport: the others serve its queue until it is replaced
        run_hook(self.cfg, "child_exit", self, handle)
        if handle.why is None and (handle.boot_error is not None or code in BOOT_ERROR_CODES):
            # The worker logged the whole error; its last line says enough here.
            handle.why = Why(ExitReason.BOOT_ERROR, _last_line(handle.boot_error) if handle.boot_error
                             else "the app failed to load")
        why = handle.why or unasked(code)
        line = exit_line(handle.age, handle.pid, code, why, handle.accepted, handle.requests)
        if self.state is not State.RUNNING or handle.retiring:
            self.log.info("%s", line)
            return
        self.restarts[why.reason.value] += 1
        if self.reload is not None and handle.generation == self.reload.generation and not handle.ready:
            self.log.error("%s", line)
            self._abort_reload(why.detail if why.reason is ExitReason.BOOT_ERROR else exit_status(code))
            return
        if why.reason is ExitReason.BOOT_ERROR:
            self.log.error("%s", line)
            if not self.ever_ready:
                self.log.error("Shutting down: the app cannot be loaded")
                self.exit_code = code if code in BOOT_ERROR_CODES else EXIT_BOOT_ERROR
                self._begin_stop(graceful=False)
                return
        else:
            self.log.warning("%s; starting a replacement", line)
        if code != 0 and time.monotonic() - handle.started < HEALTHY_UPTIME:
            self.crash_streak += 1
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (self.crash_streak - 1))
            self.respawn_at = time.monotonic() + delay
            self.log.warning("Workers keep crashing; next start in %.1fs", delay)

    def _check_heartbeats(self, now: float) -> None:
        timeout = self.cfg.timeout
        for handle in list(self.workers.values()):
            if handle.kill_at is not None:
                if now >= handle.kill_at:
                    self._kill(handle, signal.SIGKILL)
                    handle.kill_at = float("inf")
                continue
            if timeout and now - handle.last_heartbeat > timeout:
                handle.why = Why(ExitReason.TIMEOUT, f"no heartbeat for {timeout}s")
                self.log.error("Worker %d (pid %d) timed out: no heartbeat for %ds; aborting",
                               handle.age, handle.pid, timeout)
                self._kill(handle, signal.SIGABRT)
                handle.kill_at = now + ABORT_GRACE

    def _kill(self, handle: WorkerHandle, sig: int) -> None:
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    def _retire(self, handle: WorkerHandle, why: Why) -> None:
        """Stop a worker gracefully; it is not replaced."""
        handle.retiring = True
        handle.why = why
        self.log.info("Retiring worker %d (pid %d); reason: %s", handle.age, handle.pid, why)
        self._stop_one(handle)

    def _stop_one(self, handle: WorkerHandle) -> None:
        """SIGTERM one worker while others serve on; it is told first that they do (sent
        before the signal, the notice is waiting on its channel when the signal arrives):
        in round-robin mode it may hand its untouched connections back, and in the other
        modes a worker past ``max_requests`` leaves the listen queue to them."""
        if any(not h.retiring for h in self.workers.values()):
            handle.channel.send(MAY_HAND_BACK)
        self._kill(handle, signal.SIGTERM)

    def _replace(self, handle: WorkerHandle, why: Why) -> None:
        """Start a worker to take ``handle``'s place; stop ``handle`` once that one is ready."""
        if handle.retiring:
            return
        self.restarts[why.reason.value] += 1
        handle.retiring = True
        handle.stop_when_replaced = True
        handle.why = why
        self.log.info("Worker %d (pid %d) will be replaced; reason: %s", handle.age, handle.pid, why)
        self._spawn(successor_of=handle)

    def _stop_replaced(self) -> None:
        ready = [h for h in self.workers.values() if h.ready and not h.retiring]
        if len(ready) < self.num_workers:
            return
        for handle in self.workers.values():
            if handle.stop_when_replaced:
                handle.stop_when_replaced = False
                self._stop_one(handle)

    def _check_memory(self) -> None:
        limit = self.cfg.max_worker_memory
        if not limit:
            return
        for handle in list(self.workers.values()):
            rss = process.resident_bytes(handle.pid)
            if handle.ready and not handle.retiring and rss is not None and rss > limit:
                self._replace(handle, Why(ExitReason.MAX_WORKER_MEMORY,
                                          f"RSS {rss / MIB:.0f} MiB is above {limit / MIB:.0f} MiB"))

    def _lend_slot(self, handle: WorkerHandle) -> None:
        """Reuseport: the other workers watch a retired worker's sockets, which stay open
        (with none left, the next worker to start claims one lent slot and adopts the rest)."""
        if self.slots is not None and handle.slot is not None:
            slot = self.slots.lend(handle.slot)
            self._tell_workers(ADOPT, fds=slot.fds, slot=slot.number)

    def _current(self) -> list[WorkerHandle]:
        """The workers that count towards ``num_workers``: the current generation's, not
        retiring, oldest first (during a reload, the new generation's)."""
        return sorted((h for h in self.workers.values()
                       if h.generation == self.generation and not h.retiring), key=lambda h: h.age)

    def _scale_to(self, count: int, cause: str) -> None:
        """Set the worker count (TTIN, TTOU, ``ctl scale``): missing workers start at the
        next tick; surplus ones, oldest first, stop gracefully now."""
        self._set_worker_count(count)
        self.scaled = count
        self.log.info("%s: now %d workers", cause, count)
        current = self._current()
        for handle in current[:max(0, len(current) - count)]:
            self._retire(handle, Why(ExitReason.SCALE_DOWN, f"fewer workers ({cause})"))
            self._lend_slot(handle)

    # -- reload (HUP) ----------------------------------------------------------

    def _begin_reload(self) -> None:
        here = os.getcwd()
        # Relative paths on the command line mean what they meant at start.
        os.chdir(self.start_directory)
        try:
            cfg = load_config(self.argv)
            app_loader.prepare_environment(cfg)  # raw_env, env_file, chdir, pythonpath again
        except (ConfigError, app_loader.AppLoadError) as err:
            os.chdir(here)
            self.log.error("SIGHUP: configuration error, the running workers stay: %s", err)
            return
        for warning in cfg.warnings:
            self.log.warning("SIGHUP: %s", warning)
        for name in FIXED_FOR_LIFE:
            if cfg.values[name] != self.cfg.values[name]:
                self.log.warning("SIGHUP: %s changed; that needs a restart, keeping %r",
                                 name, self.cfg.values[name])
                cfg.values[name] = self.cfg.values[name]
        if self.reload is not None:
            superseded = self.reload
            for handle in self._generation(superseded.generation):
                self._retire(handle, Why(ExitReason.RELOAD,
                                         "its reload was superseded by a newer SIGHUP"))
            self.reload = Reload(self.generation + 1, superseded.previous_cfg, superseded.previous_workers)
        else:
            self.reload = Reload(self.generation + 1, self.cfg, self.num_workers)
        run_hook(cfg, "on_reload", self)
        count = self._workers_after_reload(cfg)
        self.cfg = cfg
        self._reopen_logs()
        self._start_statsd()
        self.generation += 1
        self._set_worker_count(count)
        old = sorted((h for h in self.workers.values() if not h.retiring), key=lambda h: h.age)
        self.log.info("SIGHUP: starting %d workers of generation %d", self.num_workers, self.generation)
        systemd.notify("RELOADING=1", systemd.monotonic_usec(), f"STATUS=reloading: generation {self.generation}")
        for index in range(self.num_workers):
            self._spawn(successor_of=old[index] if index < len(old) else None)

    def _workers_after_reload(self, cfg: Config) -> int:
        """One rule for TTIN, TTOU and ``ctl scale``: the count they set survives a HUP,
        unless the reloaded configuration changes ``workers``, which then wins."""
        if cfg.workers != self.cfg.workers:
            self.scaled = None
        return cfg.workers if self.scaled is None else self.scaled

    def _generation(self, generation: int) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.generation == generation and not h.retiring]

    def _check_reload(self) -> None:
        """When the whole new generation is ready, retire every older worker."""
        if self.reload is None:
            return
        new = self._current()
        if len(new) < self.num_workers or not all(h.ready for h in new):
            return
        taken_over = {h.slot for h in new}
        for handle in list(self.workers.values()):
            if handle.generation < self.reload.generation and not handle.retiring:
                self._retire(handle, Why(ExitReason.RELOAD,
                                         f"generation {self.reload.generation} is ready"))
                self.restarts[ExitReason.RELOAD.value] += 1
                if handle.slot not in taken_over:
                    self._lend_slot(handle)
        self.log.info("SIGHUP: reload done, generation %d serves", self.reload.generation)
        systemd.notify("READY=1", f"STATUS=serving generation {self.reload.generation}")
        self.reload = None

    def _abort_reload(self, reason: str) -> None:
        assert self.reload is not None
        failed = self.reload
        self.reload = None
        self.log.error("SIGHUP: generation %d failed to boot (%s); the running workers stay",
                       failed.generation, reason)
        systemd.notify("READY=1", f"STATUS=reload failed ({reason}); previous workers serve")
        previous_slots = {h.slot for h in self.workers.values() if h.generation < failed.generation}
        for handle in self._generation(failed.generation):
            self._retire(handle, Why(ExitReason.RELOAD, "its generation failed to boot"))
            if self.slots is not None and handle.slot is not None and handle.slot not in previous_slots:
                self.slots.vacate(handle.slot)
        self.cfg = failed.previous_cfg
        self._set_worker_count(failed.previous_workers)
        for handle in self.workers.values():
            if not handle.retiring:
                handle.generation = self.generation  # the workers that stay are current again
        self._reopen_logs()

    # -- upgrade (USR2) ----------------------------------------------------------

    def _begin_upgrade(self) -> None:
        if self.pid == 1:
            self.log.warning("SIGUSR2 refused: as PID 1, this arbiter's exit would end the container; "
                             "use SIGHUP to reload the app")
            return
        if self.successor is not None or self.handed_over:
            self.log.warning("SIGUSR2 ignored: an upgrade is already under way or done")
            return
        if self.cfg.pidfile and os.path.exists(self.cfg.pidfile):
            os.replace(self.cfg.pidfile, self.cfg.pidfile + ".oldbin")
        labelled = self.slots.labelled() if self.slots is not None else [(l, "") for l in self.listeners]
        self.successor = upgrade.start_successor(
            labelled, self.argv, self.start_directory,
            before_exec=lambda: run_hook(self.cfg, "pre_exec", self))
        self.poller.add(self.successor.ready_pipe, self._on_successor)
        self.log.info("SIGUSR2: started a new arbiter, pid %d", self.successor.pid)

    def _on_successor(self) -> None:
        assert self.successor is not None
        if os.read(self.successor.ready_pipe, 64).startswith(upgrade.READY):
            self._forget_successor()
            self.handed_over = True
            self.log.info("SIGUSR2: the new arbiter is ready; stopping our workers "
                          "(send SIGTERM to this arbiter, pid %d, to finish)", self.pid)
            if self.dispatcher is not None:
                self.dispatcher.stop(graceful=True)  # the new arbiter accepts from now on
            self._stop_workers("SIGUSR2: the new arbiter serves")
            for listener in self._all_listeners():
                listener.sock.close()  # the new arbiter has its own copies
            self._close_endpoints(remove_files=False)  # the new arbiter answers ctl and scrapes
        else:
            self.poller.remove(self.successor.ready_pipe)  # closed early: its exit tells why

    def _upgrade_failed(self, reason: str) -> None:
        self.log.error("SIGUSR2: the new arbiter failed (%s); this one keeps serving", reason)
        self._forget_successor()
        if self.cfg.pidfile and os.path.exists(self.cfg.pidfile + ".oldbin"):
            os.replace(self.cfg.pidfile + ".oldbin", self.cfg.pidfile)

    def _forget_successor(self) -> None:
        assert self.successor is not None
        if self.successor.ready_pipe in self.poller:
            self.poller.remove(self.successor.ready_pipe)
        os.close(self.successor.ready_pipe)
        self.successor = None

    def _stop_workers(self, reason: str) -> None:
        """Retire every worker and start none (WINCH; the end of a USR2)."""
        self._set_worker_count(0)
        leaving = [h for h in self.workers.values() if not h.retiring]
        for handle in leaving:
            handle.retiring = True  # all at once: none is told it may hand connections back
        for handle in leaving:
            self._retire(handle, Why(ExitReason.STOP, reason))
        for handle in leaving:
            self._lend_slot(handle)

    def _set_worker_count(self, count: int) -> None:
        if count != self.num_workers:
            old, self.num_workers = self.num_workers, count
            run_hook(self.cfg, "nworkers_changed", self, count, old)

    def _reopen_logs(self) -> None:
        try:
            logs.configure(self.cfg)
        except (OSError, logs.LogConfigError) as err:
            self.log.error("cannot reopen the log files: %s", err)

    # -- signals and transitions -------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self._begin_stop(graceful=True)
        elif signum == signal.SIGINT:
            self._on_interrupt()
        elif signum == signal.SIGQUIT:
            self._begin_stop(graceful=False)
        elif signum == signal.SIGCHLD:
            pass  # reaped in _tick
        elif signum == signal.SIGTTIN and self.state is State.RUNNING:
            self._scale_to(self.num_workers + 1, "SIGTTIN")
        elif signum == signal.SIGTTOU and self.state is State.RUNNING:
            if self.num_workers > 1:
                self._scale_to(self.num_workers - 1, "SIGTTOU")
            else:
                self.log.info("SIGTTOU ignored: one worker is the minimum")
        elif signum == signal.SIGUSR1:
            logs.reopen_files()
            for handle in self.workers.values():
                self._kill(handle, signal.SIGUSR1)
            self.log.info("SIGUSR1: log files reopened (and the workers told to)")
        elif self.handed_over and signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            self.log.warning("%s ignored: this arbiter handed its sockets over after SIGUSR2; "
                             "signal the new one", signal.Signals(signum).name)
        elif signum == signal.SIGHUP and self.state is State.RUNNING:
            self._begin_reload()
        elif signum == signal.SIGUSR2 and self.state is State.RUNNING:
            self._begin_upgrade()
        elif signum == signal.SIGWINCH and self.state is State.RUNNING:
            self._stop_workers("SIGWINCH")

    def _on_interrupt(self) -> None:
        """SIGINT (Ctrl-C): the first is a graceful stop bounded by INTERRUPT_GRACE, after
        which what is left stops fast; the second is a fast stop at once."""
        self.interrupts += 1
        if self.interrupts > 1 or self.state is State.HALTING:
            self._begin_stop(graceful=False)
            return
        self.escalate_at_deadline = True
        within = min(INTERRUPT_GRACE, self.cfg.graceful_timeout) + INTERRUPT_MARGIN
        if self.state is State.STOPPING:
            self.stop_deadline = min(self.stop_deadline, time.monotonic() + within)
            return
        self._begin_stop(graceful=True, within=within)

    def _begin_stop(self, graceful: bool, within: float | None = None) -> None:
        if self.state is State.HALTING or (graceful and self.state is State.STOPPING):
            return
        self.state = State.STOPPING if graceful else State.HALTING
        systemd.notify("STOPPING=1")
        wait = self.cfg.graceful_timeout if graceful else min(FAST_STOP_GRACE, self.cfg.graceful_timeout)
        if within is not None:
            wait = min(wait, within)
        self.stop_deadline = time.monotonic() + wait
        self.log.info("%s: %d workers%s", "Graceful stop" if graceful else "Fast stop", len(self.workers),
                      f", at most {wait:g}s (SIGINT again: fast stop)" if within is not None else "")
        if self.dispatcher is not None:
            self.dispatcher.stop(graceful)
        # Workers take what is queued on the listeners as they stop; once the
        # last copy closes, new connections are refused rather than queued.
        for listener in self._all_listeners():
            listener.sock.close()
        for handle in self.workers.values():
            handle.why = handle.why or Why(ExitReason.STOP, "graceful stop" if graceful else "fast stop")
            self._kill(handle, signal.SIGTERM if graceful else signal.SIGQUIT)

    def _tick(self) -> None:
        self._reap()
        now = time.monotonic()
        self.worker_news = False
        self.next_housekeeping = now + HOUSEKEEPING_EVERY
        for endpoint in (self.control, self.metrics):
            if endpoint is not None:
                endpoint.expire(now)
        if self.statsd is not None:
            self.statsd.gauge("workers", len(self.workers))
        if self.state is State.RUNNING:
            self._check_heartbeats(now)
            self._check_memory()
            self._check_reload()
            self._stop_replaced()
            missing = self.num_workers - len(self._current())
            if missing > 0 and now >= self.respawn_at:
                for _ in range(missing):
                    self._spawn()
            if not self.announced_ready and self.workers and all(h.ready for h in self.workers.values()):
                self.announced_ready = True
                run_hook(self.cfg, "when_ready", self)
                systemd.notify("READY=1", f"STATUS=serving with {len(self.workers)} workers",
                               f"MAINPID={self.pid}")
                if self.ready_pipe is not None:
                    upgrade.tell_ready(self.ready_pipe)
                    self.ready_pipe = None
                if self.detached is not None:
                    self.detached.ready()
            return
        if not self.workers:
            self.state = State.DONE
        elif now >= self.stop_deadline and self.state is State.STOPPING and self.escalate_at_deadline:
            self.log.warning("SIGINT: %d workers still running; stopping them fast", len(self.workers))
            self._begin_stop(graceful=False)
        elif now >= self.stop_deadline:
            self.log.warning("Stop timed out; killing %d workers", len(self.workers))
            for handle in self.workers.values():
                self._kill(handle, signal.SIGKILL)
            self.stop_deadline = float("inf")

    def _poll_timeout(self) -> float:
        now = time.monotonic()
        wake = min(now + TICK, self.stop_deadline)
        if self.state is State.RUNNING and self.respawn_at > now:
            wake = min(wake, self.respawn_at)
        return max(0.0, wake - now)

    # -- the control socket's commands (see control.control_socket) ---------------

    def status(self) -> ServerStatus:
        requests = RequestStats()
        requests.add(self.gone_workers_requests)
        for handle in self.workers.values():
            requests.add(handle.stats)
        return ServerStatus(
            pid=self.pid, version=__version__, app=self.cfg.wsgi_app or "",
            dispatch=self.cfg.dispatch, state=self._state_name(), generation=self.generation,
            uptime=round(time.monotonic() - self.started, 1), workers_wanted=self.num_workers,
            queued=self.dispatcher.queued if self.dispatcher is not None else None,
            workers=worker_statuses(self.workers.values()), restarts=dict(self.restarts),
            requests=requests)

    def _state_name(self) -> str:
        if self.handed_over:
            return "handed over"
        if self.state is State.RUNNING and self.reload is not None:
            return "reloading"
        return self.state.value

    def _check_running(self, command: str) -> None:
        if self.state is not State.RUNNING or self.handed_over:
            raise ValueError(f"{command} refused: the server is {self._state_name()}")

    def start_reload(self) -> str:
        self._check_running("reload")
        self.log.info("ctl reload: as SIGHUP")
        before = self.generation
        self._begin_reload()
        if self.generation == before:
            raise ValueError("reload refused: the configuration has an error (see the error log); "
                             "the running workers stay")
        return f"reloading: generation {self.generation} is starting"

    def scale(self, workers: int) -> str:
        self._check_running("scale")
        self._scale_to(workers, "ctl scale")
        return f"now {workers} workers"

    def stop(self) -> str:
        self.log.info("ctl stop: as SIGTERM")
        self._begin_stop(graceful=True)
        return "stopping gracefully"

    # -- helpers -------------------------------------------------------------

    def _cleanup(self) -> None:
        if os.getpid() != self.pid:
            return
        if self.watcher_pid is not None:
            try:
                os.kill(self.watcher_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for listener in self._all_listeners():
            if self.handed_over:
                listener.sock.close()  # a unix socket's file is the new arbiter's now
            else:
                listener.close()
        self._close_endpoints(remove_files=not self.handed_over)
        if self.cfg.pidfile:
            for path in (self.cfg.pidfile, self.cfg.pidfile + ".oldbin"):
                try:
                    with open(path, encoding="ascii") as stream:
                        if stream.read().strip() == str(self.pid):
                            os.unlink(path)
                except OSError:
                    pass
        run_hook(self.cfg, "on_exit", self)
        self.log.info("Shutting down: exit code %d", self.exit_code)


def _count(value: Any) -> int:
    """A count from a worker's message (0 if it is not one)."""
    return value if isinstance(value, int) and value >= 0 else 0


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text
