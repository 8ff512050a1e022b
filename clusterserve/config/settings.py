"""The settings registry: every setting described once.

The command line, ``--help``, the config file readers and
``--check-config`` are all generated from ``SETTINGS``.  Names are
gunicorn's, so existing configs keep working.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterserve import access_log, descriptors, process, sockets
from clusterserve.app import AppLoadError, parse_app_spec
from clusterserve.config import types
from clusterserve.control.statsd import parse_statsd_address

# Setting kinds: how the command line takes them.
VALUE = "value"  # --flag VALUE, the last one wins
APPEND = "append"  # --flag VALUE, repeatable, collected into a list
SWITCH = "switch"  # --flag alone sets True
SWITCH_OFF = "switch-off"  # --flag alone sets False (uvicorn's --no-... flags)
HOOK = "hook"  # a callable, only from a Python config file


@dataclass(frozen=True)
class Setting:
    name: str
    section: str
    flags: tuple[str, ...]
    parse: types.Parser
    default: Any
    help: str
    kind: str = VALUE
    metavar: str | None = None
    supported: bool = True
    # The environment variable that sets the default, and how its text becomes
    # a raw value for ``parse`` (the value itself when None).
    env_var: str | None = None
    env_default: Callable[[str], Any] | None = field(default=None, compare=False)
    # A VALUE flag that may also stand alone, meaning this value (argparse's nargs="?").
    flag_alone: str | None = None
    # A SWITCH that is on by default: the flags that turn it off.
    off_flags: tuple[str, ...] = ()
    # How --help shows the default, when repr-like text would mislead (an octal mode).
    shown_default: str | None = None


def _seconds_or_off(raw: Any) -> float | None:
    """Seconds (more than 0), or off: None, false, "off" or "none"."""
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in ("off", "none")):
        return None
    value = types.number()(raw)
    if value <= 0:
        raise ValueError(f"must be more than 0 seconds, or off; got {value:g}")
    return value


def _bind_item(raw: Any) -> str:
    value = types.text(raw)
    if not value.strip():
        raise ValueError("empty address")
    sockets.parse_address(value)
    return value


def _open_file_limit(raw: Any) -> int:
    value = types.integer(0)(raw)
    why = descriptors.why_not_raisable(value) if value else None
    if why:
        raise ValueError(f"{value} is {why}")
    return value


def _bind_list(raw: Any) -> list[str]:
    values = types.string_list(_bind_item)(raw)
    if not values:
        raise ValueError("needs at least one address")
    return values


def _app_spec(raw: Any) -> str | None:
    value = types.optional_text(raw)
    if value is not None:
        try:
            parse_app_spec(value)
        except AppLoadError as err:
            raise ValueError(str(err)) from None
    return value


def _directory(raw: Any) -> str | None:
    """An existing directory, made absolute (as gunicorn does), or None."""
    value = types.optional_text(raw)
    if value is None:
        return None
    path = os.path.abspath(value)
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {value!r}")
    return path


def _existing_file(raw: Any) -> str | None:
    value = types.optional_text(raw)
    if value is None:
        return None
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value!r}")
    return os.path.abspath(value)  # a HUP re-reads it from wherever chdir left the arbiter


def _access_log_format(raw: Any) -> str:
    return access_log.check_format(types.text(raw))


def _account(resolve: Callable[[str], int]) -> types.Parser:
    """A user or group, by name or number, resolved to its id now (so errors come early)."""

    def parse(raw: Any) -> int | None:
        if raw is None:
            return None
        return resolve(str(raw) if isinstance(raw, int) else types.text(raw))

    return parse


def _control_socket_path(raw: Any) -> str | None:
    value = types.optional_text(raw)
    return os.path.abspath(value) if value else None


def _metrics_address(raw: Any) -> str | None:
    value = types.optional_text(raw)
    if value is None:
        return None
    if not isinstance(sockets.parse_address(value), sockets.TcpAddress):
        raise ValueError("expected HOST:PORT")
    try:
        import prometheus_client  # noqa: F401 - whether it is installed
    except ImportError:
        raise ValueError("needs prometheus-client: pip install 'clusterserve[metrics]'") from None
    return value


def _statsd_address(raw: Any) -> str | None:
    value = types.optional_text(raw)
    if value is not None:
        parse_statsd_address(value)
    return value


def _trusted_address(raw: Any) -> str:
    """An address or network of a trusted peer, or * for every peer."""
    value = types.text(raw).strip()
    if value != "*":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses or networks or *, got {value!r}") from None
    return value


def _scheme_headers(raw: Any) -> dict[str, str]:
    """gunicorn's dict of header name -> the value that means HTTPS; names upper-cased."""
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in raw.items()):
        raise ValueError(f"expected a dict of header names to values, got {raw!r}")
    return {name.upper(): value for name, value in raw.items()}


PROXY_PROTOCOL_MODES = ("off", "v1", "v2", "auto")


def _proxy_protocol(raw: Any) -> str:
    """off, v1, v2 or auto; gunicorn's older boolean form: true = auto, false = off."""
    if isinstance(raw, bool):
        return "auto" if raw else "off"
    value = types.text(raw).strip().lower()
    value = {"true": "auto", "false": "off"}.get(value, value)
    if value not in PROXY_PROTOCOL_MODES:
        raise ValueError(f"expected one of {', '.join(PROXY_PROTOCOL_MODES)}; got {raw!r}")
    return value


def _cert_reqs(raw: Any) -> int:
    value = types.integer(0)(raw)
    if value > 2:
        raise ValueError(f"expected 0, 1 or 2 (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED), got {raw!r}")
    return value


# gunicorn's ssl_version values (Python's ssl.PROTOCOL_* names and numbers) and
# the oldest TLS version each means here; None: the ssl module's default.
SSL_VERSIONS: dict[str, str | None] = {
    "TLS": None, "SSLv23": None, "TLS_SERVER": None, "TLS_CLIENT": None,
    "TLSv1": "TLSv1", "TLSv1_1": "TLSv1_1", "TLSv1_2": "TLSv1_2", "TLSv1_3": "TLSv1_3",
}
_SSL_VERSION_NUMBERS = {2: "TLS", 3: "TLSv1", 4: "TLSv1_1", 5: "TLSv1_2", 16: "TLS", 17: "TLS_SERVER"}


def _ssl_version(raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw in _SSL_VERSION_NUMBERS:
            return _SSL_VERSION_NUMBERS[raw]
    elif isinstance(raw, str):
        value = raw.strip().removeprefix("PROTOCOL_")
        if value.isdigit() and int(value) in _SSL_VERSION_NUMBERS:
            return _SSL_VERSION_NUMBERS[int(value)]
        if value in SSL_VERSIONS:
            return value
    raise ValueError(f"expected one of {', '.join(SSL_VERSIONS)}; got {raw!r} "
                     "(SSLv2 and SSLv3 are not supported)")


def _default_bind(port: str) -> list[str]:
    return [f"0.0.0.0:{port.strip()}"]


# gunicorn and uvicorn worker class names, and what they mean here.
WORKER_CLASSES: dict[str, str] = {
    "sync": "wsgi",
    "gthread": "wsgi",
    "wsgi": "wsgi",
    "asgi": "asgi",
    "uvicorn.workers.UvicornWorker": "asgi",
    "uvicorn.workers.UvicornH11Worker": "asgi",
    "uvicorn_worker.UvicornWorker": "asgi",
    "uvicorn_worker.UvicornH11Worker": "asgi",
}

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

SETTINGS: tuple[Setting, ...] = (
    # -- Config ---------------------------------------------------------
    Setting("config", "Config", ("-c", "--config"), types.optional_text, None,
            "Config file: a .toml file, a Python file in gunicorn.conf.py style, or "
            "python:MODULE (a Python module, imported). Without it, the first found in the "
            "working directory is read: clusterserve.toml, the [tool.clusterserve] table of "
            "pyproject.toml, gunicorn.conf.py.", metavar="FILE"),
    Setting("check_config", "Config", ("--check-config", "--print-config"), types.boolean, False,
            "Validate the settings and the app, print the effective settings with their "
            "sources, and exit (--print-config is gunicorn's name for it).", kind=SWITCH),
    Setting("wsgi_app", "Config", (), _app_spec, None,
            "The app to serve, as MODULE:ATTR, MODULE:FACTORY(ARGS) or MODULE; "
            "the APP argument sets it on the command line."),
    # -- Sockets --------------------------------------------------------
    Setting("bind", "Server socket", ("-b", "--bind"), _bind_list,
            ["127.0.0.1:8000"],
            "Address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. "
            "Repeat for several. Defaults to 0.0.0.0:$PORT when PORT is set.",
            kind=APPEND, metavar="ADDRESS", env_var="PORT", env_default=_default_bind),
    Setting("backlog", "Server socket", ("--backlog",), types.integer(1), 2048,
            "Maximum number of pending connections in the kernel queue.", metavar="INT"),
    Setting("reuse_port", "Server socket", ("--reuse-port",), types.boolean, False,
            "Set SO_REUSEPORT on the listening sockets, so that another server may bind the "
            "same port (--dispatch reuseport gives each worker a socket of its own).",
            kind=SWITCH),
    Setting("dispatch", "Server socket", ("--dispatch",),
            types.choice(("shared", "round-robin", "reuseport")), "shared",
            "How connections reach workers: shared (every worker accepts on the "
            "one socket), round-robin (the arbiter accepts and passes each connection "
            "to the least loaded worker), reuseport (one SO_REUSEPORT socket per worker; "
            "the kernel shards connections; TCP binds only).",
            metavar="MODE"),
    # -- Workers --------------------------------------------------------
    Setting("workers", "Worker processes", ("-w", "--workers"), types.integer(1), 1,
            "Number of worker processes. Defaults to $WEB_CONCURRENCY when set.",
            metavar="INT", env_var="WEB_CONCURRENCY"),
    Setting("worker_class", "Worker processes", ("-k", "--worker-class"),
            types.choice(tuple(WORKER_CLASSES)), "sync",
            "Worker type, by gunicorn or uvicorn name: sync, gthread and wsgi serve "
            "WSGI; asgi and uvicorn.workers.UvicornWorker serve ASGI.", metavar="CLASS"),
    Setting("interface", "Worker processes", ("--interface",),
            types.choice(("auto", "wsgi", "asgi")), "auto",
            "App interface: auto inspects the callable (coroutine functions are ASGI). A worker "
            "class or interface that contradicts an evidently WSGI or ASGI app is refused.",
            metavar="auto|wsgi|asgi"),
    Setting("http", "Worker processes", ("--http", "--http-parser"),
            types.choice(("auto", "h11", "httptools"), aliases={"python": "h11", "fast": "httptools"}),
            "auto", "HTTP/1.1 implementation: h11, or httptools (faster; needs the standard "
            "extra). auto is h11 for WSGI apps and httptools, when installed, for ASGI apps. "
            "gunicorn's http_parser names are taken too: python (h11), fast (httptools).",
            metavar="auto|h11|httptools"),
    Setting("threads", "Worker processes", ("--threads",), types.integer(1), 1,
            "App threads per worker (WSGI); with 1, requests run on the worker's loop thread. "
            "Idle connections never hold a thread.", metavar="INT"),
    Setting("worker_connections", "Worker processes", ("--worker-connections",),
            types.integer(1), 1000,
            "Maximum open connections per worker (fewer if the open-file limit leaves less "
            "room). A full worker closes the connections that have sent nothing for the "
            "longest to take a new one, else stops accepting.",
            metavar="INT"),
    Setting("max_requests", "Worker processes", ("--max-requests",), types.integer(0), 0,
            "Restart a worker after this many requests (0 = never): from the request that "
            "reaches it on, the worker takes no new connection and closes each open one after "
            "its next response; its replacement starts at once.", metavar="INT"),
    Setting("max_requests_jitter", "Worker processes", ("--max-requests-jitter",),
            types.integer(0), 0,
            "Add a random 0..N to max_requests per worker, so they do not restart together.",
            metavar="INT"),
    Setting("max_worker_memory", "Worker processes", ("--max-worker-memory",), types.size, 0,
            "Replace a worker whose resident memory grows past this (e.g. 512MB, 1GiB; 0 = "
            "never); its replacement is ready before it stops.", metavar="SIZE"),
    Setting("timeout", "Worker processes", ("-t", "--timeout"), types.integer(0), 30,
            "Seconds without a heartbeat before a worker is killed and replaced (0 = never); "
            "also bounds each wait for request body bytes and for the client to take the "
            "response (0: 30 s).",
            metavar="INT"),
    Setting("graceful_timeout", "Worker processes", ("--graceful-timeout",),
            types.integer(0), 30,
            "Seconds a graceful stop waits for in-flight requests before killing.",
            metavar="INT"),
    Setting("keepalive", "Worker processes", ("--keep-alive",), types.integer(0), 2,
            "Seconds an idle keep-alive connection stays open (0 = close after each response).",
            metavar="INT"),
    Setting("header_timeout", "Worker processes", ("--header-timeout",), types.number(0.1), 30.0,
            "Seconds to receive a complete request head, counted from its first byte (from the "
            "connection's start for a new one); over it gets 408.", metavar="SECONDS"),
    # -- Security -------------------------------------------------------
    Setting("limit_request_line", "Security", ("--limit-request-line",),
            types.integer(0), 4094,
            "Maximum bytes in the request line (0 = gunicorn's ceiling, 8190); longer gets 414.",
            metavar="INT"),
    Setting("limit_request_fields", "Security", ("--limit-request-fields",),
            types.integer(0), 100,
            "Maximum number of header fields (0 = 32768); more gets 431.", metavar="INT"),
    Setting("limit_request_field_size", "Security",
            ("--limit-request-field-size", "--limit-request-field_size"),
            types.integer(0), 8190,
            "Maximum bytes in one header field line, CRLF included as gunicorn counts it (0 = "
            "gunicorn's ceiling, 8190); larger gets 431.",
            metavar="INT"),
    Setting("limit_request_body", "Security", ("--limit-request-body",), types.size, 0,
            "Maximum request body size (e.g. 10MB; 0 = no limit); a larger Content-Length, or "
            "a chunked body that grows past it, gets 413.", metavar="SIZE"),
    Setting("header_map", "Security", ("--header-map",),
            types.choice(("drop", "refuse", "dangerous")), "drop",
            "Request headers with '_' in their name, which the environ (and frameworks that "
            "build one) cannot tell from '-': drop them, refuse the request (400), or pass "
            "them on (dangerous).",
            metavar="drop|refuse|dangerous"),
    Setting("server_header", "Security", ("--no-server-header",), types.boolean, True,
            "Leave out the 'Server: clusterserve' header, which is otherwise added to "
            "responses that have none (uvicorn's flag; setting server_header, default true).",
            kind=SWITCH_OFF),
    Setting("date_header", "Security", ("--no-date-header",), types.boolean, True,
            "Leave out the Date header, which is otherwise added to responses that have none "
            "(uvicorn's flag; setting date_header, default true).", kind=SWITCH_OFF),
    Setting("forwarded_allow_ips", "Security", ("--forwarded-allow-ips",),
            types.string_list(_trusted_address, comma_separated=True), ["127.0.0.1", "::1"],
            "Comma-separated addresses or networks of proxies trusted to set X-Forwarded-For, "
            "X-Forwarded-Proto (and the other secure_scheme_headers) and Forwarded; * trusts "
            "all. Defaults to $FORWARDED_ALLOW_IPS when set.", metavar="IPS",
            env_var="FORWARDED_ALLOW_IPS"),
    Setting("secure_scheme_headers", "Security", (), _scheme_headers,
            {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
            "Headers, and the value of each that means HTTPS, by which a trusted proxy "
            "(forwarded_allow_ips) says the client used HTTPS (config file only)."),
    Setting("proxy_protocol", "Security", ("--proxy-protocol",), _proxy_protocol, "off",
            "Read a PROXY protocol header (HAProxy's, v1 text or v2 binary) before each "
            "connection's first request, from peers in proxy_allow_ips: off; v1 or v2 (required); "
            "auto (either, or none; the flag alone and true mean auto).",
            metavar="MODE", flag_alone="auto"),
    Setting("proxy_allow_ips", "Security", ("--proxy-allow-from",),
            types.string_list(_trusted_address, comma_separated=True), ["127.0.0.1", "::1"],
            "Comma-separated addresses or networks allowed to send a PROXY protocol header; "
            "* allows all.", metavar="IPS"),
    # -- TLS --------------------------------------------------------------
    Setting("certfile", "SSL", ("--certfile", "--ssl-certfile"), types.optional_text, None,
            "TLS certificate chain (PEM). With keyfile, every bind serves HTTPS.", metavar="FILE"),
    Setting("keyfile", "SSL", ("--keyfile", "--ssl-keyfile"), types.optional_text, None,
            "TLS private key (PEM); may be omitted when certfile holds the key too.",
            metavar="FILE"),
    Setting("ca_certs", "SSL", ("--ca-certs", "--ssl-ca-certs"), types.optional_text, None,
            "CA certificates (PEM) that client certificates are checked against (see cert_reqs).",
            metavar="FILE"),
    Setting("cert_reqs", "SSL", ("--cert-reqs", "--ssl-cert-reqs"), _cert_reqs, 0,
            "Client certificates: 0 not asked for, 1 checked if sent, 2 required "
            "(Python's ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED).", metavar="0|1|2"),
    Setting("ssl_version", "SSL", ("--ssl-version",), _ssl_version, "TLS",
            "The oldest TLS version accepted, by the name of Python's ssl.PROTOCOL_ constant "
            "gunicorn takes (TLS, SSLv23, TLS_SERVER: the ssl module's default; TLSv1, TLSv1_1 "
            "(obsolete, a warning), TLSv1_2) or TLSv1_3.", metavar="VERSION"),
    Setting("ciphers", "SSL", ("--ciphers", "--ssl-ciphers"), types.optional_text, None,
            "OpenSSL cipher list for TLS 1.2 and older (TLS 1.3 suites are not affected); "
            "none: the ssl module's default.", metavar="CIPHERS"),
    Setting("suppress_ragged_eofs", "SSL", ("--suppress-ragged-eofs",), types.boolean, True,
            "A client that closes TCP without a TLS close_notify reads as an end of file "
            "(as Python's ssl option). On by default; --no-suppress-ragged-eofs turns it off "
            "(gunicorn's --suppress-ragged-eofs is accepted).", kind=SWITCH,
            off_flags=("--no-suppress-ragged-eofs",)),
    # -- Server mechanics -----------------------------------------------
    Setting("preload_app", "Server mechanics", ("--preload",), types.boolean, False,
            "Import the app in the arbiter before forking (shares memory; HUP then "
            "does not reload app code).", kind=SWITCH),
    Setting("chdir", "Server mechanics", ("--chdir",), _directory, None,
            "Change to this directory before loading the app.", metavar="DIR"),
    Setting("pythonpath", "Server mechanics", ("--pythonpath",),
            types.string_list(comma_separated=True), [],
            "Comma-separated directories to add to sys.path.", metavar="DIRS"),
    Setting("raw_env", "Server mechanics", ("-e", "--env"),
            types.string_list(types.env_assignment), [],
            "Set an environment variable for the app, KEY=VALUE; repeatable.",
            kind=APPEND, metavar="KEY=VALUE"),
    Setting("daemon", "Server mechanics", ("-D", "--daemon"), types.boolean, False,
            "Detach into the background, as gunicorn -D: the command returns 0 once the "
            "sockets are bound and the first workers are ready, or non-zero with the error. "
            "Refused as PID 1 and under systemd (NOTIFY_SOCKET set).", kind=SWITCH),
    Setting("enable_stdio_inheritance", "Server mechanics", ("-R", "--enable-stdio-inheritance"),
            types.boolean, False, "With daemon: keep stdin, stdout and stderr as they were "
            "instead of pointing them at /dev/null once the server is ready.", kind=SWITCH),
    Setting("pidfile", "Server mechanics", ("-p", "--pid"), types.optional_text, None,
            "Write the arbiter's pid to this file.", metavar="FILE"),
    Setting("proc_name", "Server mechanics", ("-n", "--name"), types.optional_text, None,
            "Process title base (needs the setproctitle extra).", metavar="NAME"),
    Setting("user", "Server mechanics", ("-u", "--user"), _account(process.resolve_user), None,
            "Run workers as this user (name or uid).", metavar="USER"),
    Setting("group", "Server mechanics", ("-g", "--group"), _account(process.resolve_group), None,
            "Run workers as this group (name or gid).", metavar="GROUP"),
    Setting("umask", "Server mechanics", ("-m", "--umask"),
            types.integer(0, octal_strings=True), 0,
            "File mode creation mask, e.g. 0o027 (also applies to unix sockets).",
            metavar="INT"),
    Setting("rlimit_nofile", "Server mechanics", ("--rlimit-nofile",), _open_file_limit, 0,
            "Raise the open-file limit (RLIMIT_NOFILE, as ulimit -n) of the arbiter to at "
            "least this at start, as nginx's worker_rlimit_nofile (0 = keep the inherited "
            "one). Workers, and processes the app starts, inherit it. Above the hard limit "
            "only as root. Each worker holds at most the limit less 64 connections, and "
            "sheds idle ones beyond.", metavar="INT"),
    # -- Debugging --------------------------------------------------------
    Setting("reload", "Debugging", ("--reload",), types.boolean, False,
            "Development: restart the workers when a Python file under the working directory "
            "(or pythonpath, or reload_extra_files) changes, as a SIGHUP would.", kind=SWITCH),
    Setting("reload_engine", "Debugging", ("--reload-engine",),
            types.choice(("auto", "poll", "watchfiles"), aliases={"inotify": "watchfiles"}), "auto",
            "How --reload notices changes: watchfiles (inotify; in the standard extra), poll "
            "(mtimes each second), or auto (watchfiles when installed).", metavar="ENGINE"),
    Setting("reload_extra_files", "Debugging", ("--reload-extra-file",), types.string_list(), [],
            "More files whose change triggers a reload (templates, config); repeatable.",
            kind=APPEND, metavar="FILE"),
    # -- Logging --------------------------------------------------------
    Setting("loglevel", "Logging", ("--log-level",), types.choice(LOG_LEVELS), "info",
            "Error log level: " + ", ".join(LOG_LEVELS) + ".", metavar="LEVEL"),
    Setting("errorlog", "Logging", ("--error-logfile", "--log-file"), types.text, "-",
            "Error log file; - is stderr.", metavar="FILE"),
    Setting("capture_output", "Logging", ("--capture-output",), types.boolean, False,
            "Send the stdout and stderr of the arbiter and workers (print(), stray "
            "tracebacks) to the errorlog file; no effect when errorlog is -.", kind=SWITCH),
    Setting("logconfig", "Logging", ("--log-config",), _existing_file, None,
            "A logging.config.fileConfig (INI) file, applied after errorlog and loglevel "
            "so that what it configures wins. Loggers: clusterserve (error log), "
            "clusterserve.access; gunicorn.error and gunicorn.access are accepted as aliases.",
            metavar="FILE"),
    Setting("logconfig_json", "Logging", ("--log-config-json",), _existing_file, None,
            "A logging.config.dictConfig file in JSON; wins over logconfig.", metavar="FILE"),
    Setting("logconfig_dict", "Logging", (), types.mapping, {},
            "A logging.config.dictConfig dictionary (config file only); wins over "
            "logconfig and logconfig_json."),
    Setting("accesslog", "Logging", ("--access-logfile",), types.optional_text, None,
            "Access log file; - is stdout. Off unless set (or a log config routes "
            "clusterserve.access).", metavar="FILE"),
    Setting("access_log_format", "Logging", ("--access-logformat",), _access_log_format,
            '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
            "Access log line, with gunicorn's atoms (see docs/observability.md).",
            metavar="FORMAT"),
    Setting("access_log_json", "Logging", ("--access-log-json",), types.boolean, False,
            "Write the access log as JSON lines with named fields instead of "
            "access_log_format (see docs/observability.md).", kind=SWITCH),
    # -- Control and metrics ----------------------------------------------
    Setting("control_socket", "Control", ("--control-socket",), _control_socket_path, None,
            "Unix socket for `clusterserve ctl` (status, reload, scale, stop). Off unless set.",
            metavar="PATH"),
    Setting("control_socket_mode", "Control", ("--control-socket-mode",),
            types.integer(0, octal_strings=True), 0o600,
            "Permissions of the control socket, in octal; 0o600 lets only its owner (and root) "
            "use it.", metavar="MODE", shown_default="0o600"),
    Setting("control_socket_disable", "Control", ("--no-control-socket",), types.boolean, False,
            "Turn the control socket off even when control_socket is set.", kind=SWITCH),
    Setting("metrics_bind", "Metrics", ("--metrics-bind",), _metrics_address, None,
            "HOST:PORT where the arbiter serves Prometheus metrics at /metrics (needs the "
            "metrics extra). Off unless set.", metavar="ADDRESS"),
    Setting("statsd_host", "Metrics", ("--statsd-host",), _statsd_address, None,
            "HOST:PORT or unix://PATH of a statsd daemon to send gunicorn's metrics to.",
            metavar="ADDRESS"),
    Setting("statsd_prefix", "Metrics", ("--statsd-prefix",), types.text, "",
            "Prefix of every statsd metric name (a dot is added).", metavar="PREFIX"),
    Setting("dogstatsd_tags", "Metrics", ("--dogstatsd-tags",), types.text, "",
            "Comma-separated key:value tags added to every statsd metric (DogStatsD).",
            metavar="TAGS"),
    # -- ASGI (uvicorn) ---------------------------------------------------
    Setting("loop", "ASGI (uvicorn)", ("--loop", "--asgi-loop"), types.choice(("auto", "asyncio", "uvloop")),
            "auto", "Event loop of the ASGI worker (auto picks uvloop when installed).",
            metavar="auto|asyncio|uvloop"),
    Setting("ws", "ASGI (uvicorn)", ("--ws",),
            types.choice(("auto", "none", "websockets", "websockets-sansio", "wsproto")), "auto",
            "WebSocket implementation of the ASGI worker; none refuses WebSockets.", metavar="IMPL"),
    Setting("ws_max_size", "ASGI (uvicorn)", ("--ws-max-size",), types.integer(1), 16 * 1024 * 1024,
            "Largest WebSocket message the ASGI worker takes, in bytes; a larger one closes the "
            "connection with 1009 (with --ws wsproto, from uvicorn 0.46 on).", metavar="BYTES"),
    Setting("ws_max_queue", "ASGI (uvicorn)", ("--ws-max-queue",), types.integer(1), 32,
            "WebSocket messages received and not yet read by the app before the worker stops "
            "reading from that client (with --ws websockets).", metavar="INT"),
    Setting("ws_ping_interval", "ASGI (uvicorn)", ("--ws-ping-interval",), _seconds_or_off, 20.0,
            "Seconds between the pings the ASGI worker sends on a WebSocket (off: none).",
            metavar="SECONDS"),
    Setting("ws_ping_timeout", "ASGI (uvicorn)", ("--ws-ping-timeout",), _seconds_or_off, 20.0,
            "Seconds a WebSocket client has to answer a ping before it is closed with 1011 "
            "(off: no limit).", metavar="SECONDS"),
    Setting("ws_per_message_deflate", "ASGI (uvicorn)", ("--ws-per-message-deflate",), types.boolean,
            True, "Offer WebSocket compression (permessage-deflate) to clients that ask for it.",
            metavar="true|false", shown_default="true"),
    Setting("lifespan", "ASGI (uvicorn)", ("--lifespan", "--asgi-lifespan"), types.choice(("auto", "on", "off")),
            "auto", "ASGI lifespan events: on requires them, auto uses them if the app does.",
            metavar="auto|on|off"),
    Setting("root_path", "ASGI (uvicorn)", ("--root-path",), types.text, "",
            "ASGI root_path, for an app mounted below a path prefix.", metavar="PATH"),
    Setting("proxy_headers", "ASGI (uvicorn)", ("--proxy-headers",), types.boolean, True,
            "Take the client address, scheme and host from X-Forwarded-For, Forwarded and the "
            "secure_scheme_headers when the peer is in forwarded_allow_ips, as the WSGI worker "
            "does (ASGI worker). On by default; --no-proxy-headers "
            "turns it off (as uvicorn's flags).", kind=SWITCH, off_flags=("--no-proxy-headers",)),
    Setting("limit_concurrency", "ASGI (uvicorn)", ("--limit-concurrency",),
            types.optional(types.integer(1)), None,
            "Answer 503 beyond this many concurrent connections and tasks per worker.",
            metavar="INT"),
    Setting("factory", "ASGI (uvicorn)", ("--factory",), types.boolean, False,
            "Treat APP as a factory to call with no arguments (as uvicorn --factory).",
            kind=SWITCH),
    Setting("env_file", "ASGI (uvicorn)", ("--env-file",), types.optional_text, None,
            "Load environment variables from this .env file before loading the app "
            "(needs python-dotenv, in the standard extra).", metavar="FILE"),
    # -- uvicorn's address flags (they set bind) -------------------------
    Setting("host", "uvicorn address flags", ("--host",), types.optional_text, None,
            "uvicorn's --host: with --port, the same as -b HOST:PORT.", metavar="HOST"),
    Setting("port", "uvicorn address flags", ("--port",), types.optional(types.integer(0)), None,
            "uvicorn's --port: with --host (default 127.0.0.1), the same as -b HOST:PORT.",
            metavar="PORT"),
    Setting("uds", "uvicorn address flags", ("--uds",), types.optional_text, None,
            "uvicorn's --uds: the same as -b unix:PATH.", metavar="PATH"),
    Setting("fd", "uvicorn address flags", ("--fd",), types.optional(types.integer(0)), None,
            "uvicorn's --fd: the same as -b fd://N.", metavar="N"),
    # -- Hooks (Python config files only) -------------------------------
    *(
        Setting(name, "Server hooks", (), types.hook, None, text, kind=HOOK)
        for name, text in (
            ("on_starting", "on_starting(server): before the arbiter binds."),
            ("when_ready", "when_ready(server): after the first workers are ready."),
            ("pre_fork", "pre_fork(server, worker): in the arbiter, before a fork."),
            ("post_fork", "post_fork(server, worker): in the worker, after the fork."),
            ("post_worker_init", "post_worker_init(worker): in the worker, after the app loaded."),
            ("worker_exit", "worker_exit(server, worker): in the worker, as it exits."),
            ("child_exit", "child_exit(server, worker): in the arbiter, after a worker exited."),
            ("on_exit", "on_exit(server): in the arbiter, before it exits."),
            ("on_reload", "on_reload(server): in the arbiter, on SIGHUP, before new workers start."),
            ("nworkers_changed", "nworkers_changed(server, new_value, old_value): the worker "
             "count changed (SIGTTIN, SIGTTOU, SIGHUP)."),
            ("worker_int", "worker_int(worker): in the worker, on SIGINT or SIGQUIT."),
            ("worker_abort", "worker_abort(worker): in the worker, on SIGABRT (a missed heartbeat, or a request "
             "stuck on the loop thread)."),
            ("pre_exec", "pre_exec(server): in the new arbiter's process on SIGUSR2, before exec."),
            ("pre_request", "pre_request(worker, req): before the app handles a request."),
            ("post_request", "post_request(worker, req, environ, resp): after it."),
            ("ssl_context", "ssl_context(config, default_ssl_context_factory): returns the "
             "ssl.SSLContext for TLS; the factory makes the one the settings describe."),
        )
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
