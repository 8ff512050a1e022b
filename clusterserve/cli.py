"""The ``clusterserve`` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from clusterserve import app as app_loader
from clusterserve import daemon, logs, upgrade
from clusterserve.config import Config, ConfigError, load_config

EXIT_USAGE = 2
EXIT_APP = 3  # the app could not be loaded, as when the first workers cannot load it


def _fail(message: str) -> int:
    print(f"clusterserve: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def check_config(cfg: Config) -> int:
    """Print the effective settings and try to load the app, as ``--check-config`` asks."""
    print(cfg.describe())
    for note in cfg.notes:
        print(f"# {note}")
    try:
        app_loader.prepare_environment(cfg)  # as the arbiter does, so the app imports as it would
        app = app_loader.load_configured_app(cfg)
    except app_loader.AppLoadError as err:
        print(f"clusterserve: error: {err}", file=sys.stderr)
        return EXIT_APP
    except Exception as err:  # noqa: BLE001 - report whatever the app raised
        print(f"clusterserve: error: cannot load app {cfg.wsgi_app!r}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_APP
    from clusterserve.workers.base import resolve_interface

    warning = app_loader.factory_warning(cfg, app)
    if warning is not None:
        print(f"clusterserve: warning: {warning}", file=sys.stderr)
    try:
        interface = resolve_interface(cfg, app)
    except app_loader.InterfaceMismatch as err:
        print(f"clusterserve: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"# app {cfg.wsgi_app!r} loads and is served as {interface.upper()}")
    return 0


def run(argv: Sequence[str]) -> int:
    try:
        cfg = load_config(argv)
    except ConfigError as err:
        return _fail(str(err))
    for warning in cfg.warnings:
        print(f"clusterserve: warning: {warning}", file=sys.stderr)
    if not cfg.wsgi_app:
        return _fail("no app given: clusterserve [OPTIONS] MODULE:APP (see --help)")
    try:
        app_loader.parse_app_spec(cfg.wsgi_app)
    except app_loader.AppLoadError as err:
        return _fail(str(err))
    if cfg.check_config:
        return check_config(cfg)
    detached = None
    if cfg.daemon and not upgrade.is_successor():  # a USR2 successor is detached already
        detached = daemon.detach(cfg.enable_stdio_inheritance)
    code = _serve(cfg, argv, detached)
    if detached is not None:
        detached.exited(code)  # nothing is said if the server was ready
    return code


def _serve(cfg: Config, argv: Sequence[str], detached: daemon.Detached | None) -> int:
    try:
        logs.configure(cfg)
    except (OSError, logs.LogConfigError) as err:
        message = f"cannot open log file: {err}" if isinstance(err, OSError) else str(err)
        if detached is not None:
            detached.report_error(message)
        return _fail(message)
    if detached is not None:
        detached.copy_errors()
    from clusterserve.arbiter import Arbiter

    return Arbiter(cfg, argv, detached).run()


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["ctl"]:
        from clusterserve.control import ctl

        sys.exit(ctl.main(args[1:]))
    sys.exit(run(args))
