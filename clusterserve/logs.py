"""The error log: handlers from the settings, a log config on top, captured output,
and reopening for logrotate.

The error log is the ``clusterserve`` logger, with lines like gunicorn's,
``[time] [pid] [LEVEL] message``; the access log is ``clusterserve.access``
(its lines are formatted in ``access_log``).  As in gunicorn, ``errorlog``,
``loglevel`` and ``accesslog`` are applied first and a log config
(``logconfig_dict``, else ``logconfig_json``, else ``logconfig``) is applied
on top, so whatever it configures wins.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
import time
from typing import Any, TextIO

from clusterserve.log_output import NonBlockingOutput

log = logging.getLogger("clusterserve")
access_log = logging.getLogger("clusterserve.access")
# The ASGI worker runs uvicorn's code, which logs its errors (a failing
# lifespan startup, an exception in the app) here: same handler as ours.
uvicorn_log = logging.getLogger("uvicorn")

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

# A gunicorn log config names gunicorn's loggers; they mean ours.
GUNICORN_LOGGERS = {"gunicorn.error": log.name, "gunicorn.access": access_log.name}
LOG_CONFIG_SETTINGS = ("logconfig_dict", "logconfig_json", "logconfig")  # the first one set wins

# The errorlog file that stdout and stderr are sent to (capture_output), if any.
_captured_into: str | None = None
# The accesslog handler, when no log config was applied: while it is the access
# logger's only handler (and the logger has no filters), lines are written straight to it.
direct_access_handler: logging.StreamHandler[Any] | None = None


class Throttled:
    """A warning or an error that may repeat on every loop turn, logged at most once
    every ``interval`` seconds; the next line says how many were left out."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next = 0.0
        self._left_out = 0

    def warning(self, message: str, *args: Any) -> None:
        self._log(logging.WARNING, message, *args)

    def error(self, message: str, *args: Any) -> None:
        self._log(logging.ERROR, message, *args)

    def _log(self, level: int, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += f" (and {self._left_out} more times since the last such line)"
        log.log(level, message, *args)
        self._next = now + self.interval
        self._left_out = 0


class LogConfigError(Exception):
    """The logging settings cannot be applied; the message names the setting."""


def configure(cfg: Any) -> None:
    """Set up the error and access loggers from the settings (at start and on SIGHUP)."""
    global direct_access_handler
    direct_access_handler = None
    for logger in (log, access_log, uvicorn_log):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    error_handler = _handler(cfg.errorlog, sys.stderr)
    error_handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    for logger in (log, uvicorn_log):
        logger.addHandler(error_handler)
        logger.setLevel(cfg.loglevel.upper())
        logger.propagate = False
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    access_log.disabled = not access_log_enabled(cfg)
    access_handler = None
    if cfg.accesslog is not None:
        access_handler = _handler(cfg.accesslog, sys.stdout)
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(access_handler)
    _capture_output(cfg.errorlog if cfg.capture_output and cfg.errorlog != "-" else None)
    if not _apply_log_config(cfg):
        direct_access_handler = access_handler


def access_log_enabled(cfg: Any) -> bool:
    """Access lines are made when accesslog is set or a log config may route them (as gunicorn)."""
    return cfg.accesslog is not None or any(cfg.values[name] for name in LOG_CONFIG_SETTINGS)


def reopen_files() -> None:
    """SIGUSR1: reopen every file any logger writes to, and the captured stdout/stderr,
    so that a file moved away by logrotate is replaced by a new one."""
    try:
        for handler in _all_handlers():
            if isinstance(handler, logging.FileHandler):
                _reopen(handler)
        _capture_output(_captured_into)
    except OSError as err:  # the old files stay open; logging goes on
        log.error("cannot reopen the log files: %s: %s", err.filename, err.strerror)


def flush_all() -> None:
    """Write out what any handler holds (a worker calls this before ``os._exit``)."""
    for handler in _all_handlers():
        try:
            handler.flush()
        except (OSError, ValueError):
            pass


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(value for value in logging.Logger.manager.loggerDict.values()
                                      if isinstance(value, logging.Logger))]
    return list({id(h): h for logger in loggers for h in logger.handlers}.values())


def _reopen(handler: logging.FileHandler) -> None:
    handler.acquire()
    try:
        old = handler.stream
        handler.stream = handler._open()  # baseFilename, with the handler's mode, encoding and errors
        if old is not None:
            old.close()
    finally:
        handler.release()


def _handler(path: str, default_stream: TextIO) -> logging.StreamHandler[Any]:
    if path == "-":  # a pipe to journald or docker, often: a stalled reader must not stall us
        return logging.StreamHandler(NonBlockingOutput(default_stream, _drop_notice))
    return logging.FileHandler(path, encoding="utf-8")


def _drop_notice(count: int) -> str:
    """The error log line that says how many lines a blocked output lost."""
    record = logging.LogRecord(log.name, logging.WARNING, __file__, 0,
                               "%d log %s dropped: the output was blocked", (
                                   count, "line was" if count == 1 else "lines were"), None)
    return logging.Formatter(ERROR_FORMAT, DATE_FORMAT).format(record) + "\n"


def _capture_output(path: str | None) -> None:
    """Point file descriptors 1 and 2 at ``path``; forked workers inherit them."""
    global _captured_into
    _captured_into = path
    if path is None:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.dup2(target, sys.stdout.fileno())
        os.dup2(target, sys.stderr.fileno())
    finally:
        os.close(target)
    # A print() should reach the file when it happens, not when a block buffer fills.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)


def _apply_log_config(cfg: Any) -> bool:
    """Apply the log config, if one is set; say whether one was."""
    name = next((n for n in LOG_CONFIG_SETTINGS if cfg.values[n]), None)
    if name is None:
        return False
    value = cfg.values[name]
    where = f"setting '{name}' from {cfg.sources[name]}"
    try:
        if name == "logconfig":
            parser = configparser.ConfigParser()
            if not parser.read(value, encoding="utf-8"):
                raise OSError(f"cannot read {value}")
            _alias_ini_loggers(parser)
            logging.config.fileConfig(parser, disable_existing_loggers=False)
            return True
        if name == "logconfig_json":
            with open(value, encoding="utf-8") as stream:
                value = json.load(stream)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
        config = {"version": 1, "disable_existing_loggers": False, **value}
        config["loggers"] = _alias_dict_loggers(config.get("loggers", {}))
        logging.config.dictConfig(config)
        return True
    except Exception as err:  # noqa: BLE001 - logging.config raises anything from user input
        raise LogConfigError(f"{where}: cannot apply it: {type(err).__name__}: {err}") from None


def _alias_dict_loggers(loggers: dict[str, Any]) -> dict[str, Any]:
    renamed = {}
    for name, settings in loggers.items():
        ours = GUNICORN_LOGGERS.get(name)
        renamed[ours if ours is not None and ours not in loggers else name] = settings
    return renamed


def _alias_ini_loggers(parser: configparser.ConfigParser) -> None:
    names = {parser.get(s, "qualname", fallback="") for s in parser.sections() if s.startswith("logger_")}
    for section in parser.sections():
        if section.startswith("logger_"):
            ours = GUNICORN_LOGGERS.get(parser.get(section, "qualname", fallback=""))
            if ours is not None and ours not in names:
                parser.set(section, "qualname", ours)
