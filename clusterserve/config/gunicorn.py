"""What clusterserve does with each of gunicorn's settings.

Every gunicorn setting is in exactly one of three groups:

- **acted on**: a setting of the registry (``settings.SETTINGS``) under
  the same name, or under another name (``ALIASES``);
- **accepted as a no-op** (``NO_OP``): any value is taken, and the reason
  says why it changes nothing here;
- **refused** (``REFUSED``): gunicorn's default is accepted, any other value
  stops the start with exit code 2 and the reason, since ignoring it would
  change the server's behaviour without a word.

The table in docs/migrating.md is generated from this module, and a test
holds both to gunicorn's own list (``GUNICORN_NAMES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACTED = "acted on"
NO_OP = "no-op"
REFUSED = "refused"

# Every setting of gunicorn 27.0 (its --print-config lists them), in its order.
GUNICORN_NAMES: tuple[str, ...] = tuple("""
config wsgi_app bind backlog workers worker_class threads worker_connections max_requests
max_requests_jitter timeout graceful_timeout keepalive limit_request_line limit_request_fields
limit_request_field_size reload reload_engine reload_extra_files spew check_config print_config
preload_app sendfile reuse_port chdir daemon raw_env pidfile worker_tmp_dir user group umask
initgroups tmp_upload_dir secure_scheme_headers forwarded_allow_ips accesslog
disable_redirect_access_to_syslog access_log_format errorlog loglevel capture_output logger_class
logconfig logconfig_dict logconfig_json syslog_addr syslog syslog_prefix syslog_facility
enable_stdio_inheritance statsd_host dogstatsd_tags statsd_prefix enable_backlog_metric proc_name
default_proc_name pythonpath paste on_starting on_reload when_ready pre_fork post_fork
post_worker_init worker_int worker_abort pre_exec pre_request post_request child_exit worker_exit
nworkers_changed on_exit ssl_context proxy_protocol proxy_allow_ips protocol uwsgi_allow_ips
keyfile certfile ssl_version cert_reqs ca_certs suppress_ragged_eofs do_handshake_on_connect
ciphers http_protocols http2_cleartext http2_max_concurrent_streams http2_initial_window_size
http2_max_frame_size http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding
strip_header_spaces permit_unconventional_http_method permit_unconventional_http_version
casefold_http_method forwarder_headers header_map asgi_loop asgi_lifespan
asgi_disconnect_grace_period http_parser root_path dirty_apps dirty_workers dirty_timeout
dirty_threads dirty_graceful_timeout on_dirty_starting dirty_post_fork dirty_worker_init
dirty_worker_exit control_socket control_socket_mode control_socket_disable
websocket_max_message_size
""".split())

# gunicorn settings that are clusterserve settings under another name.
ALIASES: dict[str, str] = {
    "asgi_loop": "loop",
    "asgi_lifespan": "lifespan",
    "http_parser": "http",
    "print_config": "check_config",
}

# The command-line flag kinds a foreign setting can have (as in settings.py).
VALUE = "value"
APPEND = "append"
SWITCH = "switch"  # the flag alone sets True
SWITCH_OFF = "switch-off"  # the flag alone sets False


def _truthy(raw: Any) -> bool:
    if isinstance(raw, str):
        return raw.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(raw)


def _falsy(raw: Any) -> bool:
    return not _truthy(raw)


def _one_of(*accepted: Any) -> Callable[[Any], bool]:
    """Accepts the values given, a string also as a comma-separated list."""

    def accepts(raw: Any) -> bool:
        if isinstance(raw, str) and "," in raw:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, (list, tuple)):
            raw = list(raw)
        return raw in accepted

    return accepts


def _anything(raw: Any) -> bool:
    return True


@dataclass(frozen=True)
class Foreign:
    """A gunicorn setting clusterserve does not act on."""

    name: str
    disposition: str  # NO_OP or REFUSED
    reason: str
    flags: tuple[str, ...] = ()
    kind: str = VALUE
    # REFUSED: the values still accepted, because they are what clusterserve does anyway.
    accepts: Callable[[Any], bool] = field(default=_falsy, compare=False)
    accepted_text: str = "false"


def _no_op(name: str, reason: str, flags: tuple[str, ...] = (), kind: str = VALUE) -> Foreign:
    return Foreign(name, NO_OP, reason, flags, kind, _anything, "any value")


def _refused(name: str, reason: str, flags: tuple[str, ...] = (), kind: str = SWITCH,
             accepts: Callable[[Any], bool] = _falsy, accepted_text: str = "false") -> Foreign:
    return Foreign(name, REFUSED, reason, flags, kind, accepts, accepted_text)


_HTTP1_RULES = "h11's parsing rules apply (with --http httptools too)"
_DIRTY = "dirty arbiters (gunicorn's separate pool for slow tasks) do not exist here"

FOREIGN: tuple[Foreign, ...] = (
    _refused("spew", "no line tracing; use a debugger or py-spy", ("--spew",)),
    _refused("sendfile", "wsgi.file_wrapper always uses sendfile() for regular files; it cannot "
             "be turned off", ("--no-sendfile",), SWITCH_OFF,
             accepts=lambda raw: raw is None or _truthy(raw), accepted_text="true or unset"),
    _no_op("worker_tmp_dir", "heartbeats go over a socketpair, not through files, so no "
           "directory is used (/dev/shm or not)", ("--worker-tmp-dir",)),
    _no_op("initgroups", "with user set and group not set, the user's supplementary groups "
           "are always set", ("--initgroups",), SWITCH),
    _no_op("tmp_upload_dir", "gunicorn does not use it either; request bodies are streamed"),
    _no_op("disable_redirect_access_to_syslog", "only matters with syslog, which is refused",
           ("--disable-redirect-access-to-syslog",), SWITCH),
    _refused("logger_class", "the error and access logs are clusterserve's; use a log config "
             "(logconfig, logconfig_json, logconfig_dict) to route them", ("--logger-class",),
             VALUE, accepts=_one_of("gunicorn.glogging.Logger", "simple", None),
             accepted_text="gunicorn.glogging.Logger"),
    _no_op("syslog_addr", "only matters with syslog, which is refused", ("--log-syslog-to",)),
    _refused("syslog", "no syslog handler of its own: put a logging.handlers.SysLogHandler in "
             "a log config", ("--log-syslog",)),
    _no_op("syslog_prefix", "only matters with syslog, which is refused", ("--log-syslog-prefix",)),
    _no_op("syslog_facility", "only matters with syslog, which is refused",
           ("--log-syslog-facility",)),
    _refused("enable_backlog_metric", "no statsd backlog gauge; --metrics-bind serves Prometheus "
             "metrics", ("--enable-backlog-metric",)),
    _no_op("default_proc_name", "gunicorn sets it itself from the app; proc_name is used"),
    _refused("paste", "PasteDeploy apps cannot be loaded; name the app as MODULE:ATTR",
             ("--paste", "--paster"), VALUE, accepts=_one_of(None), accepted_text="unset"),
    _refused("protocol", "only HTTP is served (no uwsgi protocol)", ("--protocol",), VALUE,
             accepts=_one_of("http", None), accepted_text="http"),
    _no_op("uwsgi_allow_ips", "only matters with protocol uwsgi, which is refused",
           ("--uwsgi-allow-from",)),
    _no_op("do_handshake_on_connect", "the TLS handshake always runs at once, without blocking, "
           "in the worker's event loop", ("--do-handshake-on-connect",), SWITCH),
    _refused("http_protocols", "HTTP/1.1 only (HTTP/1.0 accepted), no HTTP/2",
             ("--http-protocols",), VALUE, accepts=_one_of("h1", ["h1"], None),
             accepted_text="h1"),
    _refused("http2_cleartext", "no HTTP/2", ("--http2-cleartext",), VALUE,
             accepts=_one_of("off", False, None), accepted_text="off"),
    _no_op("http2_max_concurrent_streams", "only matters with HTTP/2, which is refused",
           ("--http2-max-concurrent-streams",)),
    _no_op("http2_initial_window_size", "only matters with HTTP/2, which is refused",
           ("--http2-initial-window-size",)),
    _no_op("http2_max_frame_size", "only matters with HTTP/2, which is refused",
           ("--http2-max-frame-size",)),
    _no_op("http2_max_header_list_size", "only matters with HTTP/2, which is refused",
           ("--http2-max-header-list-size",)),
    _refused("raw_paste_global_conf", "PasteDeploy is not supported", ("--paste-global",),
             APPEND, accepts=_one_of([], None), accepted_text="empty"),
    _refused("permit_obsolete_folding", "obsolete line folding is refused with 400; "
             + _HTTP1_RULES, ("--permit-obsolete-folding",)),
    _refused("strip_header_spaces", "a space before a header's colon is refused with 400; "
             + _HTTP1_RULES, ("--strip-header-spaces",)),
    _refused("permit_unconventional_http_method", _HTTP1_RULES,
             ("--permit-unconventional-http-method",)),
    _refused("permit_unconventional_http_version", _HTTP1_RULES,
             ("--permit-unconventional-http-version",)),
    _refused("casefold_http_method", "methods are passed on as sent; " + _HTTP1_RULES,
             ("--casefold-http-method",)),
    _refused("forwarder_headers", "fixed: a trusted proxy's SCRIPT_NAME header is honoured, "
             "no other header with '_'", ("--forwarder-headers",), VALUE,
             accepts=_one_of("SCRIPT_NAME", ["SCRIPT_NAME"], ["SCRIPT_NAME", "PATH_INFO"], None),
             accepted_text="SCRIPT_NAME or SCRIPT_NAME,PATH_INFO"),
    _no_op("asgi_disconnect_grace_period", "uvicorn's protocols tell the app of a disconnect "
           "(http.disconnect) and let it finish", ("--asgi-disconnect-grace-period",)),
    _refused("websocket_max_message_size", "uvicorn's limit of 16 MiB per WebSocket message "
             "applies; it cannot be changed", ("--websocket-max-message-size",), VALUE,
             accepts=lambda raw: str(raw).strip() in ("16777216", "None"), accepted_text="16777216"),
    _refused("dirty_apps", _DIRTY, ("--dirty-app",), APPEND, accepts=_one_of([], None),
             accepted_text="empty"),
    _refused("dirty_workers", _DIRTY, ("--dirty-workers",), VALUE,
             accepts=lambda raw: str(raw).strip() in ("0", "None"), accepted_text="0"),
    _no_op("dirty_timeout", _DIRTY, ("--dirty-timeout",)),
    _no_op("dirty_threads", _DIRTY, ("--dirty-threads",)),
    _no_op("dirty_graceful_timeout", _DIRTY, ("--dirty-graceful-timeout",)),
    _no_op("on_dirty_starting", _DIRTY + "; the hook is never called, as in gunicorn without them"),
    _no_op("dirty_post_fork", _DIRTY + "; the hook is never called, as in gunicorn without them"),
    _no_op("dirty_worker_init", _DIRTY + "; the hook is never called, as in gunicorn without them"),
    _no_op("dirty_worker_exit", _DIRTY + "; the hook is never called, as in gunicorn without them"),
)

FOREIGN_BY_NAME: dict[str, Foreign] = {f.name: f for f in FOREIGN}

# What differs about a setting clusterserve acts on; the table shows it.
ACTED_NOTES: dict[str, str] = {
    "config": "also `python:MODULE`; without `-c`, `clusterserve.toml`, `[tool.clusterserve]` "
              "in `pyproject.toml` or `./gunicorn.conf.py` (see above)",
    "worker_class": "`sync`, `gthread` and uvicorn's worker classes; others are refused",
    "threads": "the app threads of every WSGI worker (`sync` and `gthread` are one worker)",
    "timeout": "heartbeats from the worker's event loop; a stuck WSGI request gets its worker "
               "replaced",
    "keepalive": "honoured by every worker",
    "check_config": "prints the effective settings with their sources and loads the app",
    "print_config": "as `check_config`",
    "reuse_port": "`SO_REUSEPORT` on the listening sockets; `--dispatch reuseport` gives each "
                  "worker its own",
    "daemon": "the parent exits once the first workers are ready, or with the error; refused "
              "as PID 1 and under systemd (`NOTIFY_SOCKET`)",
    "ssl_context": "`ssl_context(config, default_ssl_context_factory)`, as in gunicorn",
    "pre_request": "WSGI apps only",
    "post_request": "WSGI apps only",
    "when_ready": "once every first-generation worker is ready",
    "control_socket": "off unless set (gunicorn 25.1 turns it on); the client is "
                      "`clusterserve ctl`",
    "asgi_loop": "as `loop` (`--loop`)",
    "asgi_lifespan": "as `lifespan` (`--lifespan`)",
    "http_parser": "as `http` (`--http`): `fast` is httptools, `python` is h11",
    "proxy_protocol": "WSGI apps only",
    "ssl_version": "the oldest TLS version accepted",
    "user": "workers only; the arbiter keeps its user",
}


def disposition(name: str, registered: Any) -> tuple[str, str]:
    """(group, note) of gunicorn's setting ``name``; ``registered`` is ``settings.BY_NAME``."""
    foreign = FOREIGN_BY_NAME.get(name)
    if foreign is not None:
        if foreign.disposition == REFUSED:
            return REFUSED, f"{foreign.reason} (accepted: {foreign.accepted_text})"
        return NO_OP, foreign.reason
    if name in registered or name in ALIASES:
        return ACTED, ACTED_NOTES.get(name, "")
    raise KeyError(name)


def refusal(foreign: Foreign, raw: Any) -> str | None:
    """Why ``raw`` cannot be taken for ``foreign``, or None if it can."""
    if foreign.disposition == REFUSED and not foreign.accepts(raw):
        return f"not supported: {foreign.reason}"
    return None
