"""Where settings come from, and how they are merged.

Later wins: defaults < environment defaults (PORT, WEB_CONCURRENCY) <
config file < ``CLUSTERSERVE_CMD_ARGS`` < command line.  Every value is
parsed by its setting's parser, and every error names the setting and
the source it came from.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from clusterserve import __version__, tls
from clusterserve.config.settings import (
    APPEND,
    BY_NAME,
    GUNICORN_SETTINGS,
    HOOK,
    SETTINGS,
    SWITCH,
    SWITCH_OFF,
    WORKER_CLASSES,
)
from clusterserve.dispatch import reuseport
from clusterserve.sockets import TcpAddress, parse_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_ARGS = "CLUSTERSERVE_CMD_ARGS"


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
    check_config: bool = False

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
        usage="clusterserve [OPTIONS] APP\n       clusterserve ctl [--socket PATH] COMMAND",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment: CLUSTERSERVE_CMD_ARGS holds extra options (the command "
        "line wins over it); WEB_CONCURRENCY and PORT set the default workers and bind.",
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="the app, as MODULE:ATTR, MODULE:FACTORY(ARGS) or MODULE")
    parser.add_argument("--version", action="version", version=f"clusterserve {__version__}")
    parser.add_argument("--check-config", action="store_true", dest="check_config",
                        help="validate the settings and the app, print the effective "
                        "settings with their sources, and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in SETTINGS:
        if not setting.flags:
            continue
        group = groups.get(setting.section) or parser.add_argument_group(setting.section)
        groups[setting.section] = group
        default = "" if setting.default in (None, [], "") else f" [default: {setting.default}]"
        help_text = f"{setting.help}{default}".replace("%", "%%")
        if setting.kind in (SWITCH, SWITCH_OFF):
            group.add_argument(*setting.flags, dest=setting.name, action="store_const",
                               const=setting.kind == SWITCH, help=help_text)
        elif setting.flag_alone is not None:
            group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar,
                               nargs="?", const=setting.flag_alone, help=help_text)
        else:
            group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar,
                               action="append" if setting.kind == APPEND else "store",
                               help=help_text)
    return parser


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
    if values["env_file"]:
        where = f"setting 'env_file' from {sources['env_file']}"
        if not os.path.isfile(values["env_file"]):
            raise ConfigError(f"{where}: no such file: {values['env_file']!r}")
        if importlib.util.find_spec("dotenv") is None:
            raise ConfigError(f"{where}: needs python-dotenv (pip install 'clusterserve[standard]')")
    if values["http"] == "httptools" and importlib.util.find_spec("httptools") is None:
        raise ConfigError(f"setting 'http' from {sources['http']}: httptools is not installed "
                          "(pip install 'clusterserve[standard]')")
    if values["proxy_protocol"] != "off" and (
            values["interface"] == "asgi" or WORKER_CLASSES[values["worker_class"]] == "asgi"):
        raise ConfigError(f"setting 'proxy_protocol' from {sources['proxy_protocol']}: the ASGI "
                          "worker (uvicorn) cannot read PROXY protocol headers; only WSGI apps can")
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
    warning = tls.obsolete_version_warning(values)
    if warning:
        warnings.append(warning)


def read_toml(path: str, table: str | None = None) -> dict[str, Any]:
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
    values = {}
    for key, raw in data.items():
        if key not in BY_NAME:
            hint = " (clusterserve does not support it)" if key in GUNICORN_SETTINGS else ""
            raise ConfigError(f"{source}: unknown setting '{key}'{hint}")
        if BY_NAME[key].kind == HOOK:
            raise ConfigError(
                f"setting '{key}' from {source}: hooks can only be set in a Python config file"
            )
        values[key] = _parse_value(key, raw, source)
    return values


def read_python(path: str) -> tuple[dict[str, Any], list[str]]:
    """Settings from a gunicorn.conf.py-style file: names of settings, hooks as callables.

    Other names (imports, helpers) are ignored, as gunicorn does; gunicorn
    settings clusterserve does not act on get a warning.
    """
    source = f"config file {path}"
    if not os.path.isfile(path):
        raise ConfigError(f"{source}: no such file")
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any error in user code is a config error
        raise ConfigError(f"{source}: failed to run: {type(err).__name__}: {err}") from None
    values, warnings = {}, []
    for key, raw in namespace.items():
        if key.startswith("_"):
            continue
        if key in BY_NAME:
            values[key] = _parse_value(key, raw, source)
        elif key in GUNICORN_SETTINGS:
            warnings.append(f"{source}: gunicorn setting '{key}' is not used by clusterserve; ignored")
    return values, warnings


def read_config_file(path: str | None) -> tuple[dict[str, Any], list[str], str | None]:
    """Read the given config file, or the default one in the working directory."""
    if path is None:
        if os.path.isfile("clusterserve.toml"):
            path = "clusterserve.toml"
        elif os.path.isfile("pyproject.toml"):
            values = read_toml("pyproject.toml", table="tool.clusterserve")
            return values, [], ("pyproject.toml [tool.clusterserve]" if values else None)
        else:
            return {}, [], None
    if path.endswith(".toml"):
        return read_toml(path), [], path
    values, warnings = read_python(path)
    return values, warnings, path


def _namespace_values(namespace: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(namespace).items() if k in BY_NAME}


def _parse_args(parser: _Parser, argv: Sequence[str], source: str) -> argparse.Namespace:
    parser.source = source
    return parser.parse_args(list(argv))


def _split_env_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UsageError(f"{ENV_ARGS}: cannot split into arguments: {err}") from None


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into the effective configuration, or raise ``ConfigError``."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    cli = _parse_args(parser, argv, "command line")
    env_args = _parse_args(parser, _split_env_args(environ.get(ENV_ARGS, "")), ENV_ARGS)
    for namespace, where in ((env_args, ENV_ARGS), (cli, "command line")):
        if getattr(namespace, "app", None) is not None:
            namespace.wsgi_app = namespace.app
            if where == ENV_ARGS:
                raise UsageError(f"{ENV_ARGS}: the APP argument belongs on the command line")

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

    config_path = getattr(cli, "config", None) or getattr(env_args, "config", None)
    file_values, warnings, file_label = read_config_file(config_path)
    for name, value in file_values.items():
        values[name] = value
        sources[name] = f"config file {file_label}"

    for namespace, where in ((env_args, ENV_ARGS), (cli, "command line")):
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
    return Config(
        values=values,
        sources=sources,
        warnings=warnings,
        check_config=any(getattr(ns, "check_config", False) for ns in (cli, env_args)),
    )
