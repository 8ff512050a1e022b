"""The worker side of the lifecycle, common to every interface.

A worker is forked by the arbiter and never returns to the arbiter's code:
``Worker.run`` sets the process up, loads the app, reports ``ready`` (or
the import error) over its channel, serves until told to stop, and exits
with ``os._exit``.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from clusterserve import app as app_loader
from clusterserve import logs, process, signals
from clusterserve.channel import ABORT, BOOT_ERROR, HEARTBEAT, READY, RETIRE, Channel
from clusterserve.config import Config
from clusterserve.control.request_stats import RequestStats
from clusterserve.control.statsd import StatsdClient
from clusterserve.hooks import run_hook
from clusterserve.sockets import Listener
from clusterserve.worker_exits import Why

# Imported here, in the arbiter, so that a worker that drops privileges does
# not need to read the installation to find its own code.
from clusterserve.workers import asgi
from clusterserve.workers.asgi import AsgiServer, LifespanStartupFailed
from clusterserve.workers.wsgi import WsgiServer

# Exit codes the arbiter understands.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3
EXIT_CONFIG_ERROR = 2  # a setting contradicts the app: a configuration error, as at start-up

# Until its server installs its own handlers, a booting worker dies at once on
# a stop signal (nothing is in flight yet) and ignores the arbiter-only ones.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGWINCH)


class BootError(Exception):
    """The app could not be loaded or is of an interface this worker cannot serve."""

    def __init__(self, message: str, exit_code: int = EXIT_BOOT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Worker:
    """Lifecycle of one worker process; an interface's server does the serving."""

    def __init__(
        self,
        cfg: Config,
        age: int,
        listeners: list[Listener],
        channel: Channel,
        arbiter: Any,
        app: Callable[..., Any] | None,
    ) -> None:
        self.cfg = cfg
        self.age = age
        self.listeners = listeners
        self.channel = channel
        self.arbiter = arbiter
        self.arbiter_pid = arbiter.pid
        self.app = app
        self.interface = ""
        self.pid = 0
        self.log = logs.log
        self.requests_served = 0
        # Kept only when something reports them: the arbiter's metrics or statsd.
        self.request_stats: RequestStats | None = None
        self.retire_requested = False
        self.interrupt_seen = False
        self.abort_requested = False
        self.max_requests = cfg.max_requests + random.randint(0, cfg.max_requests_jitter) \
            if cfg.max_requests else 0

    # -- in the child, right after fork --------------------------------

    def run(self, forget_arbiter: Callable[[], None]) -> NoReturn:
        """Become the worker: never returns."""
        code = EXIT_OK
        try:
            self.pid = os.getpid()
            forget_arbiter()
            self._setup_process()
            run_hook(self.cfg, "post_fork", self.arbiter, self)
            self.request_stats = _request_stats(self.cfg)
            app = self._load()
            run_hook(self.cfg, "post_worker_init", self)
            self._server_class()(self, app).serve_forever()
        except (BootError, LifespanStartupFailed) as err:
            self.channel.send(BOOT_ERROR, error=str(err))
            self.log.error("worker %s failed to boot: %s", self.pid, err)
            code = err.exit_code if isinstance(err, BootError) else EXIT_BOOT_ERROR
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # reported, whatever it is, before the worker dies
            self.log.exception("worker %s crashed", self.pid)
            code = 1
        finally:
            run_hook(self.cfg, "worker_exit", self.arbiter, self)
            _flush_stdio()
            os._exit(code)

    def _setup_process(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signals.release()  # held since the fork; a stop signal now stops this booting worker
        if self.cfg.group is not None or self.cfg.user is not None:
            process.drop_privileges(self.cfg.user, self.cfg.group)
        process.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.arbiter_pid:
            raise SystemExit(EXIT_OK)  # the arbiter died while we were forking
        name = self.cfg.proc_name or "clusterserve"
        process.set_title(f"{name}: worker {self.age} [{self.cfg.wsgi_app}]")

    def _load(self) -> Callable[..., Any]:
        app = self.app
        if app is None:
            try:
                app = app_loader.load_configured_app(self.cfg)
            except app_loader.AppLoadError as err:
                raise BootError(str(err)) from None
            except Exception:  # noqa: BLE001 - show the user's traceback
                raise BootError(
                    f"cannot load app {self.cfg.wsgi_app!r}:\n{traceback.format_exc().rstrip()}"
                ) from None
            gc.collect()
            warning = app_loader.factory_warning(self.cfg, app)
            if warning is not None:
                self.log.warning("%s", warning)
        try:
            self.interface = resolve_interface(self.cfg, app)
        except app_loader.InterfaceMismatch as err:
            raise BootError(str(err), exit_code=EXIT_CONFIG_ERROR) from None
        if self.interface == "asgi":
            problem = asgi.unsupported(self.cfg.ws)
            if problem:
                raise BootError(problem)
        return app

    def _server_class(self) -> Any:
        return WsgiServer if self.interface == "wsgi" else AsgiServer

    # -- while serving --------------------------------------------------

    def interrupted(self) -> None:
        """SIGINT or SIGQUIT arrived: the ``worker_int`` hook, once."""
        if not self.interrupt_seen:
            self.interrupt_seen = True
            run_hook(self.cfg, "worker_int", self)

    def interrupt(self) -> NoReturn:
        """A fast stop (SIGQUIT, a second SIGINT): nothing waits for in-flight requests."""
        self.interrupted()
        raise SystemExit(EXIT_OK)

    def reopen_logs(self) -> None:
        """SIGUSR1 (forwarded by the arbiter): reopen log files, as logrotate expects."""
        logs.reopen_files()

    def abort(self) -> None:
        """SIGABRT: no heartbeat for ``timeout`` seconds, or a request stuck on the loop thread."""
        run_hook(self.cfg, "worker_abort", self)
        raise SystemExit(1)

    def ask_to_retire(self, why: Why) -> None:
        """Ask the arbiter for a replacement; it sends SIGTERM once that one is ready."""
        if not self.retire_requested:
            self.retire_requested = True
            self.log.info("worker %s asks to retire; reason: %s", self.pid, why)
            self.channel.send(RETIRE, reason=why.reason.value, detail=why.detail)

    def ask_to_be_aborted(self, why: Why) -> None:
        """Ask the arbiter for SIGABRT now: a request holds the thread a stop would need."""
        if not self.abort_requested:
            self.abort_requested = True
            self.log.error("worker %s asks to be aborted; reason: %s", self.pid, why)
            self.channel.send(ABORT, reason=why.reason.value, detail=why.detail)

    def heartbeat(self, accepted: int, open_connections: int, in_flight: int) -> None:
        """Tell the arbiter this worker is alive, with its counts for status and metrics."""
        stats = self.request_stats.to_message() if self.request_stats is not None else None
        self.channel.send(HEARTBEAT, requests=self.requests_served, accepted=accepted,
                          open=open_connections, in_flight=in_flight, stats=stats)

    def report_ready(self) -> None:
        self.channel.send(READY, interface=self.interface)

    @property
    def heartbeat_interval(self) -> float:
        return min(1.0, self.cfg.timeout / 4) if self.cfg.timeout else 1.0

    def graceful_deadline(self) -> float:
        graceful_timeout: float = self.cfg.graceful_timeout
        return time.monotonic() + graceful_timeout


def _request_stats(cfg: Config) -> RequestStats | None:
    if cfg.statsd_host:
        return RequestStats(StatsdClient(cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags))
    return RequestStats() if cfg.metrics_bind else None


def resolve_interface(cfg: Config, app: Callable[..., Any] | None) -> str:
    """The interface to serve: the setting, else the worker class, else detection.

    Raises ``InterfaceMismatch`` when the setting or the worker class says one
    interface and the app's signature leaves no doubt that it is the other.
    """
    from clusterserve.config.settings import WORKER_CLASSES

    chosen: str
    if cfg.interface != "auto":
        chosen, source = cfg.interface, f"--interface {cfg.interface}"
    elif WORKER_CLASSES[cfg.worker_class] == "asgi":
        chosen, source = "asgi", f"worker class {cfg.worker_class!r}"
    else:
        assert app is not None, "detection needs the app"
        return app_loader.detect_interface(app)
    evident = app_loader.evident_interface(app) if app is not None else None
    if evident is not None and evident != chosen:
        raise app_loader.InterfaceMismatch(
            f"setting 'interface': app {cfg.wsgi_app!r} is a {evident.upper()} app, but {source} "
            f"serves it as {chosen.upper()}; remove that, or give --interface {evident}")
    return chosen


def _flush_stdio() -> None:
    logs.flush_all()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
