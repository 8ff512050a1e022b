"""The arbiter: binds, forks, reaps, and turns signals into transitions.

It is single-threaded and never imports the app (unless ``preload_app``),
so every fork is clean.  One loop waits on the signal wakeup socket and on
each worker's channel; after every wake-up, ``_tick`` brings the world in
line with the current state.

The arbiter's states and what moves it between them are one table,
``arbiter_lifecycle.TABLE`` (starting, running, reloading, upgrading, handed
over, stopping, interrupted, halting, killing, done); ``fire`` runs each transition.  A
worker's own states are another, ``worker_lifecycle.TRANSITIONS``, applied by
``_move``.  Signals, ctl commands and what the loop observes (every worker
ready, a new generation ready or failed, no worker left, a deadline) are the
events.

A worker that must go (max_requests, a stuck request on an app thread,
max_worker_memory, a malformed message) is replaced first and stopped once
its replacement is ready.  A first-generation worker that cannot load the
app halts the server with the load error (exit code 3) instead of forking
again and again.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterserve import (
    __version__,
    daemon,
    descriptors,
    log_output,
    logs,
    process,
    reloader,
    signals,
    systemd,
    tls,
    upgrade,
)
from clusterserve import app as app_loader
from clusterserve.arbiter_lifecycle import (
    SERVING,
    STAY,
    STOPPING,
    TABLE,
    Done,
    Event,
    HandedOver,
    Interrupted,
    Killing,
    Reloading,
    Running,
    Starting,
    State,
    StoppingFast,
    StoppingGracefully,
    Upgrading,
    accepts,
)
from clusterserve.channel import (
    ABORT,
    ADOPT,
    BOOT_ERROR,
    HEARTBEAT,
    MAY_HAND_BACK,
    READY,
    RELEASE,
    RETIRE,
    Channel,
    Message,
    Received,
)
from clusterserve.children import OsProcessTable, ProcessTable
from clusterserve.config import Config, ConfigError, load_config
from clusterserve.config.settings import WORKER_CLASSES
from clusterserve.containment import Breaker
from clusterserve.control.control_socket import ControlSocket
from clusterserve.control.request_stats import RequestStats
from clusterserve.control.statsd import StatsdClient
from clusterserve.control.status import ServerStatus, worker_statuses
from clusterserve.dispatch import reuseport
from clusterserve.dispatch.round_robin import RoundRobinDispatcher
from clusterserve.dispatch.wire import Handback, Report
from clusterserve.hooks import run_hook
from clusterserve.poller import Poller
from clusterserve.signals import SignalQueue
from clusterserve.sockets import (
    BindError,
    Listener,
    TcpAddress,
    adopt_inherited,
    bind_all,
    bind_reuseport,
    parse_address,
)
from clusterserve.worker_exits import ExitReason, Why, exit_line, exit_status, signal_name, unasked
from clusterserve.worker_lifecycle import SIGNALS, STAYING, WITH_DEADLINE, WorkerEvent, WorkerState, next_state
from clusterserve.worker_messages import problem
from clusterserve.workers import asgi
from clusterserve.workers.base import EXIT_BOOT_ERROR, EXIT_CONFIG_ERROR, Worker, resolve_interface
from clusterserve.workers.grace import INTERRUPT_GRACE

EXIT_OK = 0
EXIT_FAILURE = 1
# A worker that failed to boot exits with one of these: its app cannot load, or a setting contradicts it.
BOOT_ERROR_CODES = (EXIT_BOOT_ERROR, EXIT_CONFIG_ERROR)

# An aborted worker (a missed heartbeat, a request stuck on its loop thread) gets this
# long after SIGABRT before SIGKILL.
ABORT_GRACE = 2.0
# A worker asked to stop gets graceful_timeout plus this long before SIGKILL.
STOP_GRACE = 2.0
# A fast stop waits at most this long (or graceful_timeout, if shorter) before SIGKILL.
FAST_STOP_GRACE = 5.0
# After the first SIGINT's bound, workers still running get this long to stop by
# themselves (they got SIGINT from the terminal too) before the arbiter sends SIGQUIT.
INTERRUPT_MARGIN = 1.0
# A stop ends this long after its SIGKILLs, even if a worker could not be reaped.
GIVE_UP_AFTER_KILL = 5.0
# A worker that dies sooner than this after it started counts as a crash for back-off.
HEALTHY_UPTIME = 5.0
# A worker that exits unasked as if told to stop (code 0, or SIGINT, SIGTERM, SIGQUIT) is
# judged this long after it is reaped: a Ctrl-C reaches the whole process group, and the
# kernel may deliver it to a worker, which exits, before it reaches the arbiter.
STOP_SIGNAL_SETTLE = 0.5
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
MAX_BACKOFF = 30.0
TICK = 1.0
# While only connections and their acknowledgements flow, housekeeping (reaping,
# heartbeats, respawns) runs this often rather than after every loop turn.
HOUSEKEEPING_EVERY = 0.1
# In round-robin mode, a worker this late on its heartbeat gets no new connections.
LATE_HEARTBEAT = 2.0
MIB = 1024 * 1024
# What the breaker calls the handling of each kind of message from a worker.
MESSAGE_STEPS = {kind: f"a {kind!r} message from a worker"
                 for kind in (READY, BOOT_ERROR, HEARTBEAT, RETIRE, ABORT, Report.kind, Handback.kind)}

# Settings a HUP cannot change: the sockets and how they are shared, a preloaded app,
# the arbiter's own control and metrics endpoints, and its open-file limit.
FIXED_FOR_LIFE = ("bind", "backlog", "reuse_port", "dispatch", "preload_app", "control_socket",
                  "control_socket_mode", "control_socket_disable", "metrics_bind", "rlimit_nofile")


SIGNAL_EVENTS: dict[int, Event] = {
    signal.SIGTERM: Event.TERM, signal.SIGINT: Event.INT, signal.SIGQUIT: Event.QUIT,
    signal.SIGHUP: Event.HUP, signal.SIGUSR1: Event.USR1, signal.SIGUSR2: Event.USR2,
    signal.SIGWINCH: Event.WINCH, signal.SIGTTIN: Event.TTIN, signal.SIGTTOU: Event.TTOU}


@dataclass
class WorkerHandle:
    """What the arbiter knows about one worker process."""

    age: int
    channel: Channel
    started: float
    last_heartbeat: float  # from its start until its first heartbeat
    pid: int = 0
    state: WorkerState = WorkerState.BOOTING  # moved only by Arbiter._move
    kill_at: float | None = None  # in a state WITH_DEADLINE: SIGKILL if still alive then
    # Counts towards the wanted number of workers: until it is retired or a replacement is
    # started for it.  A worker aborted while counted is replaced once it is gone.
    counted: bool = True
    ever_ready: bool = False
    distrusted: bool = False  # it sent a malformed message: replaced, its bad messages ignored
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
class ReapedWorker:
    """A worker that is gone, its exit to be judged (logged, replaced or not) at ``judge_at``."""

    handle: WorkerHandle
    code: int
    judge_at: float


@dataclass
class Reload:
    """A HUP in progress: the generation booting, and what to go back to if it fails."""

    generation: int
    previous_cfg: Config
    previous_workers: int
    previous_environment: dict[str, str]  # what raw_env and env_file had set
    announce: bool  # begun while starting: when it is done, the server is ready for the first time


class Arbiter:
    def __init__(self, cfg: Config, argv: Sequence[str] = (), detached: daemon.Detached | None = None,
                 processes: ProcessTable | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``processes`` and ``clock`` are the operating system's unless a test gives fakes."""
        self.cfg = cfg
        self.processes = processes if processes is not None else OsProcessTable()
        self.clock = clock
        self.argv = list(argv)  # read again on HUP, exec'd again on USR2
        self.detached = detached  # daemon: told once the first workers are ready
        self.start_directory = os.getcwd()  # before any chdir setting, for USR2
        self.ready_pipe: int | None = None  # USR2: how this arbiter tells its predecessor
        self.sockets_handed_over = False  # after USR2: the sockets and ctl path are the new arbiter's
        self.watcher_pid: int | None = None  # --reload: the process watching files
        self.generation = 1
        self.log = logs.log
        self.breaker = Breaker(self.log, clock)  # an exception in one event or step is logged, not fatal
        self.pid = os.getpid()
        self.state: State = Starting()  # moved only by fire, as arbiter_lifecycle.TABLE says
        self.exit_code = EXIT_OK
        self.num_workers = cfg.workers
        self.scaled: int | None = None  # the count TTIN, TTOU or ctl scale set; kept across HUP
        self.workers: dict[int, WorkerHandle] = {}
        # The environment as the arbiter found it, and what raw_env and env_file set on
        # top: a HUP undoes the one before applying the new config's (as gunicorn does).
        self.environment_at_start = dict(os.environ)
        self.environment_set: dict[str, str] = {}
        self.reaped: list[ReapedWorker] = []  # gone, not judged yet; nothing starts meanwhile
        self.listeners: list[Listener] = []
        self.app: Any = None
        self.poller = Poller(contain=self._contain_callback)
        self.signals: SignalQueue | None = None
        self.dispatcher: RoundRobinDispatcher | None = None
        self.slots: reuseport.SlotTable | None = None
        self.next_age = 1
        self.ever_ready = False
        self.crash_streak = 0
        self.respawn_at = 0.0
        self.started = self.clock()
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
            while not isinstance(self.state, Done):
                self.breaker.event("the arbiter's loop", self._turn)
        finally:
            self._cleanup()
        return self.exit_code

    def _turn(self) -> None:
        news = self.poller.poll(self._poll_timeout())
        if news or self.worker_news or self.clock() >= self.next_housekeeping:
            self._tick()

    def _contain_callback(self, callback: Callable[[], None]) -> None:
        """Every poller callback (a listener, a control client, a pipe) runs contained."""
        self.breaker.event(f"an event handler ({_handler_name(callback)})", callback)

    def _start(self) -> bool:
        cfg = self.cfg
        os.umask(cfg.umask)
        if cfg.rlimit_nofile:
            descriptors.raise_limit(cfg.rlimit_nofile)  # checked as the setting was read
        self._set_environment(app_loader.environment_of(cfg))
        app_loader.prepare_import_path(cfg.chdir, cfg.pythonpath)
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
        if self._interface() != "wsgi":
            asgi.import_before_fork(cfg)
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
            # the config refuses a bind that is not HOST:PORT with dispatch reuseport
            self.slots = reuseport.SlotTable(addresses, self.cfg.backlog)  # type: ignore[arg-type]  # see above
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
        except Exception as err:  # the user's error, whatever it is: reported, and the server stops
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
        now = self.clock()
        handle = WorkerHandle(age=self.next_age, channel=arbiter_end, started=now, last_heartbeat=now,
                              generation=self.generation)
        self.next_age += 1
        listeners = self._claim_listeners(handle, successor_of)
        run_hook(self.cfg, "pre_fork", self, handle)
        try:
            pid = self.processes.fork()
        except OSError:
            arbiter_end.close()
            worker_end.close()
            if successor_of is None:
                self._lend_slot(handle)  # reuseport: its claimed slot is served by the others
            raise
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
            if handle.state in STAYING and not handle.channel.send(kind, fds=fds or (), **fields):
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
        for message in messages:
            wrong = problem(message, round_robin=self.dispatcher is not None)
            if wrong is None:
                self.breaker.event(MESSAGE_STEPS.get(message.kind, "a message from a worker"),
                                   functools.partial(self._on_message, handle, message))
            else:
                for fd in message.fds:
                    os.close(fd)
                self._distrust(handle, wrong)
        self._dispatch()

    def _on_message(self, handle: WorkerHandle, message: Received) -> None:
        """Act on one message, checked by ``worker_messages.problem``."""
        if self.dispatcher is not None:
            wrong = self.dispatcher.on_message(handle.pid, message)
            if wrong is not None:
                self._distrust(handle, wrong)
        if not isinstance(message, Message):
            return  # a dispatch message
        fields = message.fields
        self.worker_news = self.worker_news or message.kind != HEARTBEAT
        if message.kind == HEARTBEAT:
            handle.last_heartbeat = self.clock()
            handle.requests = fields["requests"]
            handle.accepted = fields["accepted"]
            handle.open_connections = fields["open"]
            handle.in_flight = fields["in_flight"]
            if fields["stats"] is not None:
                handle.stats = RequestStats.from_message(fields["stats"])
        elif message.kind == READY:
            self._move(handle, WorkerEvent.READY)
            handle.ever_ready = True
            handle.last_heartbeat = self.clock()
            self.ever_ready = True
            self.crash_streak = 0
            self.log.info("Worker %d (pid %d) ready, serving %s", handle.age, handle.pid,
                          fields["interface"].upper())
        elif message.kind == BOOT_ERROR:
            handle.boot_error = fields["error"]
        elif message.kind == RETIRE and isinstance(self.state, SERVING):
            self._replace(handle, Why(ExitReason(fields["reason"]), fields["detail"]))
        elif message.kind == ABORT:
            self._abort(handle, Why(ExitReason(fields["reason"]), fields["detail"]))

    def _distrust(self, handle: WorkerHandle, wrong: str) -> None:
        """A worker sent a malformed message: replace it (once), as a crashed one would be."""
        if handle.distrusted:
            return
        handle.distrusted = True
        self.log.warning("Worker %d (pid %d) sent a malformed message: %s; replacing it",
                         handle.age, handle.pid, wrong)
        if isinstance(self.state, SERVING):
            self._replace(handle, Why(ExitReason.BAD_MESSAGE, wrong))

    def _dispatch(self) -> None:
        if self.dispatcher is None:
            return
        if isinstance(self.state, (Starting, Running, Reloading, Upgrading)):
            self.dispatcher.dispatch()
        elif isinstance(self.state, (HandedOver, StoppingGracefully, Interrupted)):
            self.dispatcher.pass_all()  # stopping, or the workers of a replaced arbiter

    def _may_take_connections(self, pid: int) -> bool:
        """Round-robin: only ready workers, not told to go, and not late on heartbeats."""
        handle = self.workers.get(pid)
        return (handle is not None and handle.state is WorkerState.READY
                and self.clock() - handle.last_heartbeat < LATE_HEARTBEAT)

    def _reap(self) -> None:
        while (exited := self.processes.reap()) is not None:
            pid, code = exited
            handle = self.workers.pop(pid, None)
            if handle is not None:
                settle = STOP_SIGNAL_SETTLE if handle.why is None and isinstance(self.state, SERVING) \
                    and (code == 0 or -code in STOP_SIGNALS) else 0.0
                self.reaped.append(ReapedWorker(handle, code, self.clock() + settle))
                self.breaker.event("a worker's exit", functools.partial(self._forget_worker, handle))
            elif isinstance(self.state, Upgrading) and pid == self.state.successor.pid:
                self.fire(Event.SUCCESSOR_FAILED, exit_status(code))
            # anything else: an orphan we adopted as PID 1, or a stray child

    def _forget_worker(self, handle: WorkerHandle) -> None:
        """A worker is gone: read what it said last, close its channel, requeue its connections."""
        self._move(handle, WorkerEvent.EXIT)
        if handle.channel.fileno() in self.poller:
            self._on_worker_message(handle)
            self.poller.remove(handle.channel.fileno())
        handle.channel.close()
        self.gone_workers_requests.add(handle.stats)
        if self.dispatcher is not None:
            self.dispatcher.remove_worker(handle.pid)
            self._dispatch()
        run_hook(self.cfg, "child_exit", self, handle)

    def _judge_exits(self, now: float) -> None:
        """Log and act on the exits that are due (all of them once the server stops)."""
        waiting, self.reaped = self.reaped, []
        for reaped in waiting:
            if reaped.judge_at <= now or not isinstance(self.state, SERVING):
                self.breaker.event("a worker's exit",
                                   functools.partial(self._worker_exited, reaped.handle, reaped.code))
            else:
                self.reaped.append(reaped)

    def _worker_exited(self, handle: WorkerHandle, code: int) -> None:
        if handle.counted and isinstance(self.state, SERVING):
            self._lend_slot(handle)  # reuseport: the others serve its queue until it is replaced
        if handle.why is None and (handle.boot_error is not None or code in BOOT_ERROR_CODES):
            # The worker logged the whole error; its last line says enough here.
            handle.why = Why(ExitReason.BOOT_ERROR, _last_line(handle.boot_error) if handle.boot_error
                             else "the app failed to load")
        why = handle.why or unasked(code)
        line = exit_line(handle.age, handle.pid, code, why, handle.accepted, handle.requests)
        if not isinstance(self.state, SERVING) or not handle.counted:
            self.log.info("%s", line)
            return
        self.restarts[why.reason.value] += 1
        if isinstance(self.state, Reloading) and handle.generation == self.state.reload.generation \
                and not handle.ever_ready:
            self.log.error("%s", line)
            self.fire(Event.RELOAD_FAILED, why.detail if why.reason is ExitReason.BOOT_ERROR else exit_status(code))
            return
        if why.reason is ExitReason.BOOT_ERROR:
            self.log.error("%s", line)
            if not self.ever_ready and accepts(self.state, Event.BOOT_FAILED):
                self.fire(Event.BOOT_FAILED, code if code in BOOT_ERROR_CODES else EXIT_BOOT_ERROR)
                return
        else:
            self.log.warning("%s; starting a replacement", line)
        # An early crash backs off; a worker aborted for a stuck request did nothing wrong at boot.
        if code != 0 and why.reason is not ExitReason.STUCK_REQUEST and \
                self.clock() - handle.started < HEALTHY_UPTIME:
            self.crash_streak += 1
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (self.crash_streak - 1))
            self.respawn_at = self.clock() + delay
            self.log.warning("Workers keep crashing; next start in %.1fs", delay)

    def _check_heartbeats(self, now: float) -> None:
        timeout = self.cfg.timeout
        if not timeout:
            return
        for handle in list(self.workers.values()):
            if handle.state not in (WorkerState.ABORTED, WorkerState.KILLED) and \
                    now - handle.last_heartbeat > timeout:
                self.log.error("Worker %d (pid %d) timed out: no heartbeat for %ds; aborting",
                               handle.age, handle.pid, timeout)
                self._abort(handle, Why(ExitReason.TIMEOUT, f"no heartbeat for {timeout}s"))

    def _check_kill_deadlines(self, now: float) -> None:
        """SIGKILL every worker still alive past the deadline it was given when told to go."""
        for handle in self.workers.values():
            if handle.kill_at is not None and now >= handle.kill_at:
                self.log.warning("Worker %d (pid %d) did not go by its deadline; killing it",
                                 handle.age, handle.pid)
                self._move(handle, WorkerEvent.DEADLINE)

    def _abort(self, handle: WorkerHandle, why: Why) -> None:
        """SIGABRT (the worker runs its worker_abort hook and exits), SIGKILL if it has not
        gone ABORT_GRACE seconds later; it is replaced when it is gone, unless it was leaving."""
        if next_state(handle.state, WorkerEvent.ABORT) is None:
            return
        if why.reason is not ExitReason.TIMEOUT:
            self.log.error("Worker %d (pid %d) aborted; reason: %s", handle.age, handle.pid, why)
        handle.why = why
        self._move(handle, WorkerEvent.ABORT)

    def _move(self, handle: WorkerHandle, event: WorkerEvent) -> bool:
        """Apply ``event`` to a worker as worker_lifecycle.TRANSITIONS says: its new state,
        the signal the event sends and the deadline it sets.  False if its state ignores it."""
        new = next_state(handle.state, event)
        if new is None:
            return False
        handle.state = new
        sig, deadline = SIGNALS.get(event, (None, None))
        if deadline is not None:
            grace = {"graceful": self.cfg.graceful_timeout + STOP_GRACE,
                     "fast": min(FAST_STOP_GRACE, self.cfg.graceful_timeout) + STOP_GRACE,
                     "abort": ABORT_GRACE}[deadline]
            at = self.clock() + grace
            handle.kill_at = at if handle.kill_at is None else min(handle.kill_at, at)
        if new not in WITH_DEADLINE:
            handle.kill_at = None
        if sig is not None:
            self._kill(handle, sig)
        return True

    def _kill(self, handle: WorkerHandle, sig: int) -> None:
        try:
            self.processes.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    def _retire(self, handle: WorkerHandle, why: Why, others_serve: bool = True) -> None:
        """Stop a worker gracefully; it is not replaced."""
        handle.counted = False
        handle.why = why
        self.log.info("Retiring worker %d (pid %d); reason: %s", handle.age, handle.pid, why)
        self._stop_one(handle, WorkerEvent.STOP, others_serve)

    def _stop_one(self, handle: WorkerHandle, event: WorkerEvent, others_serve: bool = True) -> None:
        """SIGTERM one worker; while others serve on it is told first that they do (sent
        before the signal, the notice is waiting on its channel when the signal arrives):
        in round-robin mode it may hand its untouched connections back, and in the other
        modes a worker past ``max_requests`` leaves the listen queue to them."""
        if next_state(handle.state, event) is None:
            return
        if others_serve and any(h.counted for h in self.workers.values() if h is not handle):
            handle.channel.send(MAY_HAND_BACK)
        self._move(handle, event)

    def _replace(self, handle: WorkerHandle, why: Why) -> None:
        """Start a worker to take ``handle``'s place; stop ``handle`` once that one is ready."""
        if not handle.counted or not self._move(handle, WorkerEvent.REPLACE):
            return
        self.restarts[why.reason.value] += 1
        handle.counted = False
        handle.why = why
        self.log.info("Worker %d (pid %d) will be replaced; reason: %s", handle.age, handle.pid, why)
        if handle.generation == self.generation:  # during a reload, the new generation replaces it
            self._spawn(successor_of=handle)

    def _stop_replaced(self) -> None:
        ready = [h for h in self.workers.values() if h.counted and h.state is WorkerState.READY]
        if len(ready) < self.num_workers:
            return
        for handle in list(self.workers.values()):
            if handle.state is WorkerState.RETIRING:
                self._stop_one(handle, WorkerEvent.REPLACED)

    def _check_memory(self) -> None:
        limit = self.cfg.max_worker_memory
        if not limit:
            return
        for handle in list(self.workers.values()):
            rss = self.processes.resident_bytes(handle.pid)
            if handle.state is WorkerState.READY and handle.counted and rss is not None and rss > limit:
                self._replace(handle, Why(ExitReason.MAX_WORKER_MEMORY,
                                          f"RSS {rss / MIB:.0f} MiB is above {limit / MIB:.0f} MiB"))

    def _lend_slot(self, handle: WorkerHandle) -> None:
        """Reuseport: the other workers watch a retired worker's sockets, which stay open
        (with none left, the next worker to start claims one lent slot and adopts the rest)."""
        if self.slots is not None and handle.slot is not None:
            slot = self.slots.lend(handle.slot)
            self._tell_workers(ADOPT, fds=slot.fds, slot=slot.number)

    def _current(self) -> list[WorkerHandle]:
        """The workers that count towards ``num_workers``: the current generation's, neither
        retired nor replaced, oldest first (during a reload, the new generation's)."""
        return sorted((h for h in self.workers.values()
                       if h.generation == self.generation and h.counted), key=lambda h: h.age)

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

    def _begin_reload(self) -> State:
        """A new generation, on the config as read again; the same state on a config error."""
        here = os.getcwd()
        # Relative paths on the command line mean what they meant at start.
        os.chdir(self.start_directory)
        previous_environment = self.environment_set
        self._set_environment({})  # the config is read in the environment it was read in at start
        try:
            cfg = load_config(self.argv)
            self._set_environment(app_loader.environment_of(cfg))
            app_loader.prepare_import_path(cfg.chdir, cfg.pythonpath)
        except (ConfigError, app_loader.AppLoadError) as err:
            self._set_environment(previous_environment)
            os.chdir(here)
            self.log.error("SIGHUP: configuration error, the running workers stay: %s", err)
            return self.state
        for warning in cfg.warnings:
            self.log.warning("SIGHUP: %s", warning)
        for name in FIXED_FOR_LIFE:
            if cfg.values[name] != self.cfg.values[name]:
                self.log.warning("SIGHUP: %s changed; that needs a restart, keeping %r",
                                 name, self.cfg.values[name])
                cfg.values[name] = self.cfg.values[name]
        if isinstance(self.state, Reloading):
            superseded = self.state.reload
            for handle in self._generation(superseded.generation):
                self._retire(handle, Why(ExitReason.RELOAD,
                                         "its reload was superseded by a newer SIGHUP"))
            reload = Reload(self.generation + 1, superseded.previous_cfg, superseded.previous_workers,
                            superseded.previous_environment, superseded.announce)
        else:
            reload = Reload(self.generation + 1, self.cfg, self.num_workers, previous_environment,
                            announce=isinstance(self.state, Starting))
        run_hook(cfg, "on_reload", self)
        count = self._workers_after_reload(cfg)
        self.cfg = cfg
        self._reopen_logs()
        self._start_statsd()
        self.generation += 1
        self._set_worker_count(count)
        old = sorted((h for h in self.workers.values() if h.counted), key=lambda h: h.age)
        self.log.info("SIGHUP: starting %d workers of generation %d", self.num_workers, self.generation)
        systemd.notify("RELOADING=1", systemd.monotonic_usec(), f"STATUS=reloading: generation {self.generation}")
        for index in range(self.num_workers):
            # One that cannot be forked now is started by the housekeeping, backing off.
            self.breaker.event("starting a worker",
                               functools.partial(self._spawn, successor_of=old[index] if index < len(old) else None))
        return Reloading(reload)

    def _workers_after_reload(self, cfg: Config) -> int:
        """One rule for TTIN, TTOU and ``ctl scale``: the count they set survives a HUP,
        unless the reloaded configuration changes ``workers``, which then wins."""
        if cfg.workers != self.cfg.workers:
            self.scaled = None
        return cfg.workers if self.scaled is None else self.scaled

    def _set_environment(self, values: dict[str, str]) -> None:
        """Undo what the last config set in os.environ, then set ``values``."""
        for key in self.environment_set:
            if key in self.environment_at_start:
                os.environ[key] = self.environment_at_start[key]
            else:
                os.environ.pop(key, None)
        os.environ.update(values)
        self.environment_set = dict(values)

    def _generation(self, generation: int) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.generation == generation and h.counted]

    def _reload_is_ready(self) -> bool:
        """Reloading, and every worker of the new generation is ready."""
        new = self._current()
        return isinstance(self.state, Reloading) and len(new) >= self.num_workers and \
            all(h.state is WorkerState.READY for h in new)

    def _on_reload_ready(self, event: Event) -> State:
        """Retire every older worker."""
        assert isinstance(self.state, Reloading)
        reload = self.state.reload
        taken_over = {h.slot for h in self._current()}
        for handle in list(self.workers.values()):
            if handle.generation < reload.generation and handle.counted:
                self._retire(handle, Why(ExitReason.RELOAD, f"generation {reload.generation} is ready"))
                self.restarts[ExitReason.RELOAD.value] += 1
                if handle.slot not in taken_over:
                    self._lend_slot(handle)
        self.log.info("SIGHUP: reload done, generation %d serves", reload.generation)
        if reload.announce:
            self._announce_ready()
        else:
            systemd.notify("READY=1", f"STATUS=serving generation {reload.generation}")
        return Running()

    def _on_reload_failed(self, event: Event, reason: str) -> State:
        """Stop the new generation; the config, worker count and environment go back."""
        assert isinstance(self.state, Reloading)
        failed = self.state.reload
        self.log.error("SIGHUP: generation %d failed to boot (%s); the running workers stay",
                       failed.generation, reason)
        systemd.notify("READY=1", f"STATUS=reload failed ({reason}); previous workers serve")
        previous_slots = {h.slot for h in self.workers.values() if h.generation < failed.generation}
        for handle in self._generation(failed.generation):
            self._retire(handle, Why(ExitReason.RELOAD, "its generation failed to boot"))
            if self.slots is not None and handle.slot is not None and handle.slot not in previous_slots:
                self.slots.vacate(handle.slot)
        self.cfg = failed.previous_cfg
        self._set_environment(failed.previous_environment)
        self._set_worker_count(failed.previous_workers)
        for handle in self.workers.values():
            if handle.counted:
                handle.generation = self.generation  # the workers that stay are current again
        self._reopen_logs()
        return Starting() if failed.announce else Running()

    # -- upgrade (USR2) ----------------------------------------------------------

    def _on_upgrade(self, event: Event) -> State:
        if self.pid == 1:
            self.log.warning("SIGUSR2 refused: as PID 1, this arbiter's exit would end the container; "
                             "use SIGHUP to reload the app")
            return self.state
        if self.cfg.pidfile and os.path.exists(self.cfg.pidfile):
            os.replace(self.cfg.pidfile, self.cfg.pidfile + ".oldbin")
        labelled = self.slots.labelled() if self.slots is not None else [(listener, "") for listener in self.listeners]
        successor = self.processes.start_successor(
            labelled, self.argv, self.start_directory,
            before_exec=lambda: run_hook(self.cfg, "pre_exec", self))
        self.poller.add(successor.ready_pipe, lambda: self._on_successor(successor))
        self.log.info("SIGUSR2: started a new arbiter, pid %d", successor.pid)
        return Upgrading(successor)

    def _on_successor(self, successor: upgrade.Successor) -> None:
        """The new arbiter's ready pipe: it is ready, or it closed it (then its exit tells why)."""
        if os.read(successor.ready_pipe, 64).startswith(upgrade.READY):
            self.fire(Event.SUCCESSOR_READY, successor)
        else:
            self.poller.remove(successor.ready_pipe)

    def _on_hand_over(self, event: Event, successor: upgrade.Successor) -> State:
        self._forget_successor(successor)
        self.sockets_handed_over = True
        self.log.info("SIGUSR2: the new arbiter is ready; stopping our workers "
                      "(send SIGTERM to this arbiter, pid %d, to finish)", self.pid)
        if self.dispatcher is not None:
            self.dispatcher.stop(graceful=True)  # the new arbiter accepts from now on
        self._stop_workers("SIGUSR2: the new arbiter serves")
        for listener in self._all_listeners():
            listener.sock.close()  # the new arbiter has its own copies
        self._close_endpoints(remove_files=False)  # the new arbiter answers ctl and scrapes
        return HandedOver()

    def _on_upgrade_failed(self, event: Event, reason: str) -> State:
        assert isinstance(self.state, Upgrading)
        self.log.error("SIGUSR2: the new arbiter failed (%s); this one keeps serving", reason)
        self._forget_successor(self.state.successor)
        if self.cfg.pidfile and os.path.exists(self.cfg.pidfile + ".oldbin"):
            os.replace(self.cfg.pidfile + ".oldbin", self.cfg.pidfile)
        return Running()

    def _on_leave_to_successor(self, event: Event, successor: upgrade.Successor) -> State:
        """Stopping when the new arbiter became ready: it keeps the sockets and their files."""
        self._forget_successor(successor)
        self.sockets_handed_over = True
        self.log.info("SIGUSR2: the new arbiter is ready and keeps serving; this one goes on stopping")
        return self.state

    def _on_refuse_handed_over(self, event: Event) -> State:
        self.log.warning("%s ignored: this arbiter handed its sockets over after SIGUSR2; "
                         "signal the new one", event.value)
        return self.state

    def _forget_successor(self, successor: upgrade.Successor) -> None:
        if successor.ready_pipe in self.poller:
            self.poller.remove(successor.ready_pipe)
        os.close(successor.ready_pipe)

    def _stop_workers(self, reason: str) -> None:
        """Retire every worker and start none (WINCH; the end of a USR2)."""
        self._set_worker_count(0)
        leaving = [h for h in self.workers.values() if h.counted]
        for handle in leaving:  # none may hand connections back: no worker stays
            self._retire(handle, Why(ExitReason.STOP, reason), others_serve=False)
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

    # -- the transition table ---------------------------------------------------

    def fire(self, event: Event, *args: Any) -> None:
        """Take the transition arbiter_lifecycle.TABLE gives for ``event`` in the current
        state: its ``_on_`` method acts and returns the next state, which must be one the
        table allows.  An event the state's row does not list is ignored."""
        row = TABLE[type(self.state)]
        if event not in row:
            if event in SIGNAL_EVENTS.values():
                self.log.info("%s ignored: the server is %s", event.value, self.state.name)
            return
        action, targets = row[event]
        before = self.state
        after = getattr(self, f"_on_{action}")(event, *args)
        allowed: tuple[type[State], ...] = (type(before),) if targets == STAY else tuple(
            type(before) if target == STAY else target for target in targets)
        if not isinstance(after, allowed):
            raise AssertionError(f"{event.value} in {before.name}: {action} led to {after.name}")
        self.state = after

    def _on_signal(self, signum: int) -> None:
        event = SIGNAL_EVENTS.get(signum)
        if event is not None:  # SIGCHLD only wakes the loop: reaping is housekeeping
            self.breaker.event(signal_name(signum), lambda: self.fire(event))

    def _on_stop_gracefully(self, event: Event) -> State:
        return StoppingGracefully(self._begin_stop(graceful=True))

    def _on_stop_fast(self, event: Event) -> State:
        return StoppingFast(self._begin_stop(graceful=False))

    def _on_interrupt(self, event: Event) -> State:
        """SIGINT (Ctrl-C): a graceful stop bounded by INTERRUPT_GRACE, after which what is
        left stops fast (a second SIGINT: at once).  During a graceful stop, it shortens it."""
        within = min(INTERRUPT_GRACE, self.cfg.graceful_timeout) + INTERRUPT_MARGIN
        if isinstance(self.state, StoppingGracefully):
            return Interrupted(min(self.state.deadline, self.clock() + within))
        return Interrupted(self._begin_stop(graceful=True, within=within))

    def _on_escalate(self, event: Event) -> State:
        self.log.warning("SIGINT: %d workers still running; stopping them fast", len(self.workers))
        return StoppingFast(self._begin_stop(graceful=False))

    def _on_lost_listeners(self, event: Event, reason: str) -> State:
        self.log.error("Cannot go on: %s; stopping the server", reason)
        self.exit_code = EXIT_FAILURE
        return StoppingGracefully(self._begin_stop(graceful=True))

    def _on_unloadable(self, event: Event, code: int) -> State:
        self.log.error("Shutting down: the app cannot be loaded")
        self.exit_code = code
        return StoppingFast(self._begin_stop(graceful=False))

    def _on_one_more_worker(self, event: Event) -> State:
        self._scale_to(self.num_workers + 1, event.value)
        return self.state

    def _on_one_fewer_worker(self, event: Event) -> State:
        if self.num_workers > 1:
            self._scale_to(self.num_workers - 1, event.value)
        else:
            self.log.info("SIGTTOU ignored: one worker is the minimum")
        return self.state

    def _on_scale(self, event: Event, workers: int) -> State:
        self._scale_to(workers, event.value)
        return self.state

    def _on_reopen_logs(self, event: Event) -> State:
        logs.reopen_files()
        for handle in self.workers.values():
            self._kill(handle, signal.SIGUSR1)
        self.log.info("SIGUSR1: log files reopened (and the workers told to)")
        return self.state

    def _on_reload(self, event: Event) -> State:
        return self._begin_reload()

    def _on_stop_every_worker(self, event: Event) -> State:
        self._stop_workers("SIGWINCH")
        return self.state

    def _on_ready(self, event: Event) -> State:
        self._announce_ready()
        return Running()

    def _on_done(self, event: Event) -> State:
        return Done()

    def _on_kill_the_rest(self, event: Event) -> State:
        """The stop's deadline passed: SIGKILL what is left, and end a while later regardless."""
        self.log.warning("Stop timed out; killing %d workers", len(self.workers))
        for handle in self.workers.values():
            self._kill(handle, signal.SIGKILL)
        return Killing(self.clock() + GIVE_UP_AFTER_KILL)

    def _on_give_up(self, event: Event) -> State:
        self.log.error("%d workers could not be reaped after SIGKILL; exiting without them",
                       len(self.workers))
        return Done()

    def _begin_stop(self, graceful: bool, within: float | None = None) -> float:
        """Tell every worker to stop; the stop's deadline."""
        systemd.notify("STOPPING=1")
        wait: float = self.cfg.graceful_timeout if graceful else min(FAST_STOP_GRACE, self.cfg.graceful_timeout)
        if within is not None:
            wait = min(wait, within)
        self.log.info("%s: %d workers%s", "Graceful stop" if graceful else "Fast stop", len(self.workers),
                      f", at most {wait:g}s (SIGINT again: fast stop)" if within is not None else "")
        if self.dispatcher is not None:
            self.dispatcher.stop(graceful)
        # Workers take what is queued on the listeners as they stop; once the
        # last copy closes, new connections are refused rather than queued.
        for listener in self._all_listeners():
            listener.sock.close()
        why = Why(ExitReason.STOP, "graceful stop" if graceful else "fast stop")
        for reaped in self.reaped:  # gone just before the stop: part of it (a Ctrl-C)
            reaped.handle.why = reaped.handle.why or why
        for handle in list(self.workers.values()):
            handle.why = handle.why or why
            self._move(handle, WorkerEvent.STOP if graceful else WorkerEvent.HALT)
        return self.clock() + wait

    def _tick(self) -> None:
        """Housekeeping: each step runs contained, and backs off while it keeps failing."""
        step = self.breaker.periodic
        step("writing the log", log_output.flush_all)  # what waits for a log pipe that was blocked
        step("reaping workers", self._reap)
        now = self.clock()
        self.worker_news = False
        self.next_housekeeping = now + HOUSEKEEPING_EVERY
        step("judging worker exits", lambda: self._judge_exits(now))
        step("expiring control clients", lambda: self._expire_endpoints(now))
        step("the kill deadlines", lambda: self._check_kill_deadlines(now))
        if isinstance(self.state, SERVING):
            lost = self._lost_listener()
            if lost is not None:
                self.fire(Event.LISTENERS_GONE, lost)
                return
            step("the heartbeats", lambda: self._check_heartbeats(now))
            step("the memory limit", self._check_memory)
            if self._reload_is_ready():
                self.fire(Event.RELOAD_READY)
            step("stopping replaced workers", self._stop_replaced)
            if self.num_workers > len(self._current()) and now >= self.respawn_at and not self.reaped:
                step("starting a worker", self._spawn_missing)
            if isinstance(self.state, Starting) and self._all_ready():
                self.fire(Event.ALL_READY)
        elif not self.workers:
            self.fire(Event.NO_WORKERS)
        elif isinstance(self.state, STOPPING) and now >= self.state.deadline:
            self.fire(Event.DEADLINE)

    def _expire_endpoints(self, now: float) -> None:
        for endpoint in (self.control, self.metrics):
            if endpoint is not None:
                endpoint.expire(now)
        if self.statsd is not None:
            self.statsd.gauge("workers", len(self.workers))

    def _lost_listener(self) -> str | None:
        """The listening sockets are the one thing the arbiter cannot do without: which is gone."""
        if self.sockets_handed_over:
            return None
        for listener in self._all_listeners():
            try:
                os.fstat(listener.sock.fileno())
            except (OSError, ValueError):
                return f"the listening socket for {listener.address} is gone"
        return None

    def _spawn_missing(self) -> None:
        for _ in range(self.num_workers - len(self._current())):
            self._spawn()

    def _all_ready(self) -> bool:
        counted = [h for h in self.workers.values() if h.counted]
        return bool(counted) and all(h.state is WorkerState.READY for h in counted)

    def _announce_ready(self) -> None:
        """Once: the when_ready hook, systemd's READY=1, a USR2 predecessor's ready pipe, a daemon's parent."""
        run_hook(self.cfg, "when_ready", self)
        systemd.notify("READY=1", f"STATUS=serving with {len(self.workers)} workers", f"MAINPID={self.pid}")
        if self.ready_pipe is not None:
            upgrade.tell_ready(self.ready_pipe)
            self.ready_pipe = None
        if self.detached is not None:
            self.detached.ready()

    def _poll_timeout(self) -> float:
        now = self.clock()
        wake = now + TICK
        if isinstance(self.state, STOPPING):
            wake = min(wake, self.state.deadline)
        if isinstance(self.state, SERVING) and self.respawn_at > now:
            wake = min(wake, self.respawn_at)
        for reaped in self.reaped:
            wake = min(wake, reaped.judge_at)
        return max(0.0, wake - now)

    # -- the control socket's commands (see control.control_socket) ---------------

    def status(self) -> ServerStatus:
        requests = RequestStats()
        requests.add(self.gone_workers_requests)
        for handle in self.workers.values():
            requests.add(handle.stats)
        return ServerStatus(
            pid=self.pid, version=__version__, app=self.cfg.wsgi_app or "",
            dispatch=self.cfg.dispatch, state=self.state.name, generation=self.generation,
            uptime=round(self.clock() - self.started, 1), workers_wanted=self.num_workers,
            queued=self.dispatcher.queued if self.dispatcher is not None else None,
            workers=worker_statuses(self.workers.values()), restarts=dict(self.restarts),
            requests=requests)

    def _check_accepted(self, command: str, event: Event) -> None:
        if not accepts(self.state, event) or isinstance(self.state, HandedOver):
            raise ValueError(f"{command} refused: the server is {self.state.name}")

    def start_reload(self) -> str:
        self._check_accepted("reload", Event.HUP)
        self.log.info("ctl reload: as SIGHUP")
        before = self.generation
        self.fire(Event.HUP)
        if self.generation == before:
            raise ValueError("reload refused: the configuration has an error (see the error log); "
                             "the running workers stay")
        return f"reloading: generation {self.generation} is starting"

    def scale(self, workers: int) -> str:
        self._check_accepted("scale", Event.SCALE)
        self.fire(Event.SCALE, workers)
        return f"now {workers} workers"

    def stop(self) -> str:
        self.log.info("ctl stop: as SIGTERM")
        self.fire(Event.TERM)
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
            if self.sockets_handed_over:
                listener.sock.close()  # a unix socket's file is the new arbiter's now
            else:
                listener.close()
        self._close_endpoints(remove_files=not self.sockets_handed_over)
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


def _handler_name(callback: Callable[[], None]) -> str:
    """A poller callback's function, named without a repr of its arguments (a socket's
    repr asks the kernel for both of its addresses)."""
    target = callback.func if isinstance(callback, functools.partial) else callback
    return str(getattr(target, "__qualname__", type(target).__qualname__))


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text
