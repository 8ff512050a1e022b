"""Where settings come from, and how they are merged.

Later wins: defaults < environment defaults (PORT, WEB_CONCURRENCY) <
config file < ``GUNICORN_CMD_ARGS`` < ``CLUSTERSERVE_CMD_ARGS`` < command
line.  One config file is read: the one given with ``-c``, else the first
of ``DEFAULT_CONFIG_FILES`` found in the working directory.  Every value is
parsed by its setting's parser, every error names the setting and the
source it came from, and gunicorn's settings that clusterserve does not
act on are taken or refused as ``config.gunicorn`` says.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from clusterserve import __version__, tls
from clusterserve.config import gunicorn
from clusterserve.config.settings import (
    APPEND,
    BY_NAME,
    HOOK,
    SETTINGS,
    SWITCH,
    SWITCH_OFF,
)
from clusterserve.dispatch import reuseport
from clusterserve.sockets import TcpAddress, parse_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_ARGS = "CLUSTERSERVE_CMD_ARGS"
GUNICORN_ENV_ARGS = "GUNICORN_CMD_ARGS"
# Read when no -c is given, the first one found; the rest, if present, get a warning.
DEFAULT_CONFIG_FILES = ("clusterserve.toml", "pyproject.toml", "gunicorn.conf.py")
PYPROJECT_TABLE = "tool.clusterserve"
# uvicorn's address flags: gunicorn configs use these names for variables of their own
# (``port = os.environ["PORT"]``), so a Python config file does not set them.
COMMAND_LINE_ONLY = ("host", "port", "uds", "fd")


class ConfigError(Exception):
    """Bad configuration; the message is one line naming the setting and source."""


class UsageError(ConfigError):
    """Bad command-line usage (unknown flag, missing argument)."""


@dataclass
class Config:
    """The effective settings, with the source each value came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    # gunicorn settings taken without effect, for the start-up log.
    notes: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def describe(self) -> str:
        """The effective settings, one per line, each with its source."""
        lines = []
        for setting in SETTINGS:
            value = self.values[setting.name]
            if setting.kind == HOOK:
                if value is None:
                    continue
                shown = f"<{getattr(value, '__qualname__', type(value).__name__)}>"
            else:
                shown = repr(value)
            lines.append(f"{setting.name} = {shown}  # {self.sources[setting.name]}")
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of exiting, so errors name their source."""

    source = "command line"

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.source}: {message}")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="clusterserve",
        description="Serve a Python WSGI or ASGI app with a pre-fork arbiter and workers. "
        "Settings use gunicorn's names; see docs/settings.md.\n"
        "A running server (started with --control-socket) answers `clusterserve ctl "
        "status|reload|scale N|stop`; see `clusterserve ctl --help`.",
        usage="clusterserve [OPTIONS] APP\n       clusterserve ctl [--control-socket PATH] COMMAND",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment: CLUSTERSERVE_CMD_ARGS and GUNICORN_CMD_ARGS hold extra options "
        "(the command line wins over both, CLUSTERSERVE_CMD_ARGS over GUNICORN_CMD_ARGS); "
        "WEB_CONCURRENCY and PORT set the default workers and bind.\n"
        "gunicorn's other flags are taken as docs/migrating.md lists: acted on, accepted "
        "without effect, or refused with exit code 2.",
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="the app, as MODULE:ATTR, MODULE:FACTORY(ARGS) or MODULE")
    parser.add_argument("--version", action="version", version=f"clusterserve {__version__}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in SETTINGS:
        if not setting.flags:
            continue
        group = groups.get(setting.section) or parser.add_argument_group(setting.section)
        groups[setting.section] = group
        help_text = f"{setting.help}{_shown_default(setting)}".replace("%", "%%")
        if setting.kind in (SWITCH, SWITCH_OFF):
            group.add_argument(*setting.flags, dest=setting.name, action="store_const",
                               const=setting.kind == SWITCH, help=help_text)
            if setting.off_flags:
                group.add_argument(*setting.off_flags, dest=setting.name, action="store_const",
                                   const=False, help=f"Turn {setting.flags[0]} off.")
        elif setting.flag_alone is not None:
            group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar,
                               nargs="?", const=setting.flag_alone, help=help_text)
        else:
            group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar,
                               action="append" if setting.kind == APPEND else "store",
                               help=help_text)
    for foreign in gunicorn.FOREIGN:  # listed in docs/migrating.md, not in --help
        if not foreign.flags:
            continue
        if foreign.kind in (gunicorn.SWITCH, gunicorn.SWITCH_OFF):
            parser.add_argument(*foreign.flags, dest=foreign.name, action="store_const",
                                const=foreign.kind == gunicorn.SWITCH, help=argparse.SUPPRESS)
        else:
            parser.add_argument(*foreign.flags, dest=foreign.name, help=argparse.SUPPRESS,
                                action="append" if foreign.kind == gunicorn.APPEND else "store")
    return parser


def _shown_default(setting: Any) -> str:
    """The ``[default: ...]`` of a flag's help; switches say what they do instead."""
    if setting.kind in (SWITCH, SWITCH_OFF) or setting.default in (None, [], ""):
        return ""
    return f" [default: {setting.shown_default or setting.default}]"


def _flag_label(name: str) -> str:
    flags = BY_NAME[name].flags
    return f" ({'/'.join(flags)})" if flags else ""


def _parse_value(name: str, raw: Any, source: str) -> Any:
    setting = BY_NAME[name]
    try:
        value = setting.parse(raw)
    except ValueError as err:
        raise ConfigError(f"setting '{name}' from {source}: {err}") from None
    if not setting.supported and value != setting.default:
        raise ConfigError(f"setting '{name}' from {source}: not supported yet")
    return value


UVICORN_ADDRESS = ("host", "port", "uds", "fd")


def _apply_uvicorn_address(values: dict[str, Any], sources: dict[str, str]) -> None:
    """uvicorn's --host/--port/--uds/--fd become ``bind``, so a uvicorn command line works."""
    given = [name for name in UVICORN_ADDRESS if values[name] is not None]
    if not given:
        return
    if sources["bind"] != "default" and not sources["bind"].startswith("environment"):
        raise ConfigError(f"setting '{given[0]}' from {sources[given[0]]}: cannot be combined "
                          f"with bind (from {sources['bind']}); use one or the other")
    binds = []
    if values["host"] is not None or values["port"] is not None:
        host = values["host"] or "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        binds.append(f"{host}:{8000 if values['port'] is None else values['port']}")
    if values["uds"] is not None:
        binds.append(f"unix:{values['uds']}")
    if values["fd"] is not None:
        binds.append(f"fd://{values['fd']}")
    values["bind"] = _parse_value("bind", binds, sources[given[0]])
    sources["bind"] = f"{sources[given[0]]} ({'/'.join('--' + name for name in given)})"


def _check_combination(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Settings that are valid alone but not together, or that need something installed."""
    if values["daemon"]:
        where = f"setting 'daemon' from {sources['daemon']}"
        if os.getpid() == 1:
            raise ConfigError(f"{where}: refused as PID 1: the container would stop when the "
                              "detaching parent exits; run in the foreground")
        if os.environ.get("NOTIFY_SOCKET"):
            raise ConfigError(f"{where}: refused under systemd (NOTIFY_SOCKET is set): systemd "
                              "follows the process it started; run in the foreground with "
                              "Type=notify")
    if values["env_file"]:
        where = f"setting 'env_file' from {sources['env_file']}"
        if not os.path.isfile(values["env_file"]):
            raise ConfigError(f"{where}: no such file: {values['env_file']!r}")
        if importlib.util.find_spec("dotenv") is None:
            raise ConfigError(f"{where}: needs python-dotenv (pip install 'clusterserve[standard]')")
    if values["http"] == "httptools" and importlib.util.find_spec("httptools") is None:
        raise ConfigError(f"setting 'http' from {sources['http']}: httptools is not installed "
                          "(pip install 'clusterserve[standard]')")
    if values["access_log_json"] and values["accesslog"] is None and not any(
            values[name] for name in ("logconfig", "logconfig_json", "logconfig_dict")):
        raise ConfigError(f"setting 'access_log_json' from {sources['access_log_json']}: "
                          "the access log is off; set accesslog (--access-logfile) too")
    if values["dispatch"] == "reuseport":
        where = f"setting 'dispatch' from {sources['dispatch']}"
        problem = reuseport.check_platform()
        if problem:
            raise ConfigError(f"{where}: reuseport cannot be used: {problem}")
        for bind in values["bind"]:
            if not isinstance(parse_address(bind), TcpAddress):
                raise ConfigError(
                    f"{where}: reuseport needs TCP addresses, but bind has {bind!r}; "
                    "use shared or round-robin for unix: and fd:// binds"
                )


def _check_tls(values: dict[str, Any], sources: dict[str, str], warnings: list[str]) -> None:
    """Build the TLS context once, so a bad file or option stops the start with its name."""
    try:
        tls.server_context(values)
    except tls.TlsSettingError as err:
        raise ConfigError(f"setting '{err.setting}' from {sources[err.setting]}: {err}") from None
    if values["ssl_context"] is not None and not tls.tls_enabled(values):
        warnings.append(f"setting 'ssl_context' from {sources['ssl_context']}: TLS is off "
                        "(certfile is not set), so the hook is not called, as in gunicorn")
    warning = tls.obsolete_version_warning(values)
    if warning:
        warnings.append(warning)


@dataclass
class FileSettings:
    """What one config file set: values by setting name, and notes on gunicorn's no-ops."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_toml(path: str, table: str | None = None) -> FileSettings:
    """Settings from a TOML file (or one table of it). Strict: unknown keys are errors."""
    source = f"config file {path}"
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as err:
        raise ConfigError(f"{source}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from None
    if table is not None:
        source = f"{source} [{table}]"
        for key in table.split("."):
            data = data.get(key, {}) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table, got {data!r}")
    taken = FileSettings()
    for key, raw in data.items():
        if key not in BY_NAME and key not in gunicorn.GUNICORN_NAMES:
            raise ConfigError(f"{source}: unknown setting '{key}'")
        name = gunicorn.ALIASES.get(key, key)
        if name in BY_NAME and BY_NAME[name].kind == HOOK:
            raise ConfigError(
                f"setting '{key}' from {source}: hooks can only be set in a Python config file"
            )
        _take(taken.values, key, raw, source, taken.notes)
    return taken


def _take(values: dict[str, Any], key: str, raw: Any, source: str,
          notes: list[str] | None = None) -> None:
    """One setting from a file: a registered one (or an alias), or a foreign gunicorn one."""
    foreign = gunicorn.FOREIGN_BY_NAME.get(key)
    if foreign is not None:
        _check_foreign(foreign, raw, source, notes)
        return
    name = gunicorn.ALIASES.get(key, key)
    values[name] = _parse_value(name, raw, source)


def _check_foreign(foreign: gunicorn.Foreign, raw: Any, source: str, notes: list[str] | None) -> None:
    problem = gunicorn.refusal(foreign, raw)
    if problem:
        raise ConfigError(f"setting '{foreign.name}' from {source}: {problem}")
    if foreign.disposition == gunicorn.NO_OP and notes is not None:
        notes.append(f"{source}: gunicorn setting '{foreign.name}' has no effect here: {foreign.reason}")


def read_python(path: str) -> FileSettings:
    """Settings from a gunicorn.conf.py-style file (or ``python:MODULE``): names of
    settings, hooks as callables.

    Other names (imports, helpers) are ignored, as gunicorn does, and so are
    uvicorn's address names (``COMMAND_LINE_ONLY``), which gunicorn configs use
    as variables.  gunicorn settings without effect here are noted; refused
    ones stop the start.
    """
    source = f"config file {path}"
    if path.startswith("python:"):
        namespace = _run_module(path.removeprefix("python:"), source)
    else:
        if not os.path.isfile(path):
            raise ConfigError(f"{source}: no such file")
        try:
            with _working_directory_on_path():  # as gunicorn: a config may import the project's modules
                namespace = runpy.run_path(path, run_name="__config__")
        except (Exception, SystemExit) as err:  # noqa: BLE001 - any error in user code is a config error
            raise ConfigError(f"{source}: failed to run: {type(err).__name__}: {err}") from None
    taken = FileSettings()
    for key, raw in namespace.items():
        if key.startswith("_") or key in COMMAND_LINE_ONLY:
            continue
        if key in BY_NAME or key in gunicorn.GUNICORN_NAMES:
            _take(taken.values, key, raw, source, taken.notes)
    return taken


def _run_module(name: str, source: str) -> dict[str, Any]:
    """A config module's names, run afresh each time (a HUP reads it again), found as
    gunicorn finds it: on sys.path, with the working directory first."""
    with _working_directory_on_path():
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"{source}: cannot import {name!r}: {err}") from None
        if spec is None or spec.loader is None:
            raise ConfigError(f"{source}: no module named {name!r}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - any error in user code is a config error
            raise ConfigError(f"{source}: failed to run: {type(err).__name__}: {err}") from None
    return vars(module)


@contextmanager
def _working_directory_on_path() -> Iterator[None]:
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _has_table(path: str, table: str) -> bool:
    try:
        taken = read_toml(path, table=table)
        return bool(taken.values or taken.notes)
    except ConfigError:
        return True  # let reading it report the problem


def find_default_config() -> tuple[str | None, list[str]]:
    """The config file to read when none is given, and a warning for each other one present."""
    found = []
    for candidate in DEFAULT_CONFIG_FILES:
        if not os.path.isfile(candidate):
            continue
        if candidate == "pyproject.toml":
            if _has_table(candidate, PYPROJECT_TABLE):
                found.append(f"pyproject.toml [{PYPROJECT_TABLE}]")
        else:
            found.append(candidate)
    warnings = [f"{other} is not read: {found[0]} is (one config file is read; give -c to "
                "choose)" for other in found[1:]]
    return (found[0] if found else None), warnings


def read_config_file(path: str | None) -> tuple[FileSettings, list[str], str | None]:
    """Read the given config file, or the default one in the working directory.

    Returns what it set, warnings, and the file's label (None: no file).
    """
    warnings: list[str] = []
    if path is None:
        path, warnings = find_default_config()
        if path is None:
            return FileSettings(), warnings, None
        if path.startswith("pyproject.toml"):
            return read_toml("pyproject.toml", table=PYPROJECT_TABLE), warnings, path
    if path.endswith(".toml"):
        return read_toml(path), warnings, path
    return read_python(path), warnings, path


def _namespace_values(namespace: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(namespace).items() if k in BY_NAME}


def _check_foreign_flags(namespace: argparse.Namespace, where: str, notes: list[str]) -> None:
    for name, raw in vars(namespace).items():
        foreign = gunicorn.FOREIGN_BY_NAME.get(name)
        if foreign is not None:
            _check_foreign(foreign, raw, f"{where} ({'/'.join(foreign.flags)})", notes)


def _parse_args(parser: _Parser, argv: Sequence[str], source: str) -> argparse.Namespace:
    parser.source = source
    return parser.parse_args(list(argv))


def _split_env_args(text: str, variable: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UsageError(f"{variable}: cannot split into arguments: {err}") from None


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into the effective configuration, or raise ``ConfigError``."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    cli = _parse_args(parser, argv, "command line")
    # Lowest first: each later one wins over the ones before it.
    layers = [(_parse_args(parser, _split_env_args(environ.get(variable, ""), variable), variable),
               variable) for variable in (GUNICORN_ENV_ARGS, ENV_ARGS)]
    layers.append((cli, "command line"))
    for namespace, where in layers:
        if getattr(namespace, "app", None) is not None:
            namespace.wsgi_app = namespace.app
            if where != "command line":
                raise UsageError(f"{where}: the APP argument belongs on the command line")

    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}

    for setting in SETTINGS:
        text = environ.get(setting.env_var) if setting.env_var else None
        if not text:
            continue
        source = f"environment variable {setting.env_var}"
        raw = setting.env_default(text) if setting.env_default else text
        values[setting.name] = _parse_value(setting.name, raw, source)
        sources[setting.name] = source

    config_path = next((ns.config for ns, _ in reversed(layers)
                        if getattr(ns, "config", None)), None)
    taken, warnings, file_label = read_config_file(config_path)
    for name, value in taken.values.items():
        values[name] = value
        sources[name] = f"config file {file_label}"
    notes = taken.notes

    for namespace, where in layers:
        _check_foreign_flags(namespace, where, notes)
        for name, raw in _namespace_values(namespace).items():
            source = f"{where}{_flag_label(name)}" if name != "wsgi_app" else f"{where} (APP)"
            values[name] = _parse_value(name, raw, source)
            sources[name] = where
    if file_label is not None:
        values["config"] = file_label
        if config_path is None:
            sources["config"] = "working directory"
    _apply_uvicorn_address(values, sources)
    _check_combination(values, sources)
    _check_tls(values, sources, warnings)
    return Config(values=values, sources=sources, warnings=warnings, notes=notes)
