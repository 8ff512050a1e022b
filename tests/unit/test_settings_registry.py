"""The settings registry: gunicorn's names, flags and defaults; --help from it; every parser."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from clusterserve.config import build_parser, types
from clusterserve.config.gunicorn import GUNICORN_NAMES as GUNICORN_SETTINGS
from clusterserve.config.settings import (
    APPEND,
    BY_NAME,
    HOOK,
    SETTINGS,
    SWITCH,
    SWITCH_OFF,
    VALUE,
)

ANY = object()  # gunicorn's default depends on the machine or the environment

# The settings issue 3 asks for, with gunicorn's flags and defaults (from
# gunicorn's settings reference, shared/reference/gunicorn-settings.tsv).
# clusterserve may add flags, never drop one of gunicorn's.
GUNICORN_REFERENCE = {
    "bind": (("-b", "--bind"), ["127.0.0.1:8000"]),
    "backlog": (("--backlog",), 2048),
    "workers": (("-w", "--workers"), 1),
    "worker_class": (("-k", "--worker-class"), "sync"),
    "threads": (("--threads",), 1),
    "worker_connections": (("--worker-connections",), 1000),
    "max_requests": (("--max-requests",), 0),
    "max_requests_jitter": (("--max-requests-jitter",), 0),
    "timeout": (("-t", "--timeout"), 30),
    "graceful_timeout": (("--graceful-timeout",), 30),
    "keepalive": (("--keep-alive",), 2),
    "limit_request_line": (("--limit-request-line",), 4094),
    "limit_request_fields": (("--limit-request-fields",), 100),
    "limit_request_field_size": (("--limit-request-field_size",), 8190),
    "preload_app": (("--preload",), False),
    "chdir": (("--chdir",), ANY),
    "pythonpath": (("--pythonpath",), ANY),
    "raw_env": (("-e", "--env"), []),
    "pidfile": (("-p", "--pid"), None),
    "proc_name": (("-n", "--name"), None),
    "user": (("-u", "--user"), ANY),
    "group": (("-g", "--group"), ANY),
    "umask": (("-m", "--umask"), 0),
    "forwarded_allow_ips": (("--forwarded-allow-ips",), ["127.0.0.1", "::1"]),
    "accesslog": (("--access-logfile",), None),
    "access_log_format": (("--access-logformat",),
                          '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'),
    "errorlog": (("--error-logfile", "--log-file"), "-"),
    "loglevel": (("--log-level",), "info"),
    "capture_output": (("--capture-output",), False),
    "logconfig": (("--log-config",), None),
    "logconfig_json": (("--log-config-json",), None),
    "logconfig_dict": ((), {}),
    "certfile": (("--certfile",), None),
    "keyfile": (("--keyfile",), None),
    "ca_certs": (("--ca-certs",), None),
    "cert_reqs": (("--cert-reqs",), 0),
    "ssl_version": (("--ssl-version",), "TLS"),
    "ciphers": (("--ciphers",), None),
    "suppress_ragged_eofs": (("--suppress-ragged-eofs",), True),
    "daemon": (("-D", "--daemon"), False),
    "enable_stdio_inheritance": (("-R", "--enable-stdio-inheritance"), False),
    "reuse_port": (("--reuse-port",), False),
    "check_config": (("--check-config", "--print-config"), False),
    "proxy_protocol": (("--proxy-protocol",), "off"),
    "proxy_allow_ips": (("--proxy-allow-from",), ["127.0.0.1", "::1"]),
    "secure_scheme_headers": ((), {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                                   "X-FORWARDED-SSL": "on"}),
    "config": (("-c", "--config"), ANY),
    "wsgi_app": ((), None),
}
# Settings of clusterserve's own, not gunicorn's.
OWN_SETTINGS = {
    "dispatch": (("--dispatch",), "shared"),
    "interface": (("--interface",), "auto"),
    "metrics_bind": (("--metrics-bind",), None),  # Prometheus, served by the arbiter
    # uvicorn's settings and spellings, for the ASGI worker
    "http": (("--http", "--http-parser"), "auto"),  # gunicorn's http_parser too
    "loop": (("--loop", "--asgi-loop"), "auto"),  # gunicorn's asgi_loop too
    "ws": (("--ws",), "auto"),
    "ws_max_size": (("--ws-max-size",), 16 * 1024 * 1024),
    "ws_max_queue": (("--ws-max-queue",), 32),
    "ws_ping_interval": (("--ws-ping-interval",), 20.0),
    "ws_ping_timeout": (("--ws-ping-timeout",), 20.0),
    "ws_per_message_deflate": (("--ws-per-message-deflate",), True),
    "lifespan": (("--lifespan", "--asgi-lifespan"), "auto"),  # gunicorn's asgi_lifespan too
    "proxy_headers": (("--proxy-headers",), True),
    "limit_concurrency": (("--limit-concurrency",), None),
    "factory": (("--factory",), False),
    "env_file": (("--env-file",), None),
    "host": (("--host",), None),
    "port": (("--port",), None),
    "uds": (("--uds",), None),
    "fd": (("--fd",), None),
    "max_worker_memory": (("--max-worker-memory",), 0),
    # HTTP limits gunicorn lacks (issue 7), and uvicorn's header switches
    "header_timeout": (("--header-timeout",), 30.0),
    "limit_request_body": (("--limit-request-body",), 0),
    "server_header": (("--no-server-header",), True),
    "date_header": (("--no-date-header",), True),
    "access_log_json": (("--access-log-json",), False),
    # nginx's worker_rlimit_nofile
    "rlimit_nofile": (("--rlimit-nofile",), 0),
}
HOOKS = ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init",
         "worker_exit", "child_exit", "on_exit", "pre_request", "post_request",
         "on_reload", "nworkers_changed", "worker_int", "worker_abort", "pre_exec", "ssl_context")


# -- the registry --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GUNICORN_REFERENCE))
def test_gunicorn_setting_has_gunicorns_name_flags_and_default(name):
    flags, default = GUNICORN_REFERENCE[name]
    setting = BY_NAME[name]
    assert name in GUNICORN_SETTINGS
    missing = [flag for flag in flags if flag not in setting.flags]
    assert not missing, f"{name} lacks gunicorn's flags {missing}"
    if default is not ANY:
        assert setting.default == default


@pytest.mark.parametrize("name", sorted(OWN_SETTINGS))
def test_own_settings_exist(name):
    flags, default = OWN_SETTINGS[name]
    assert BY_NAME[name].flags == flags
    assert BY_NAME[name].default == default
    assert name not in GUNICORN_SETTINGS


def test_every_registered_setting_is_a_gunicorn_one_or_a_known_own_one():
    for setting in SETTINGS:
        assert setting.name in GUNICORN_SETTINGS or setting.name in OWN_SETTINGS, setting.name
    assert len(BY_NAME) == len(SETTINGS), "a setting is registered twice"


def test_server_hooks_are_registered_for_python_files_only():
    for name in HOOKS:
        setting = BY_NAME[name]
        assert setting.kind == HOOK
        assert setting.flags == ()
        assert setting.default is None
        assert name in GUNICORN_SETTINGS


def test_flags_are_unique_across_settings():
    seen: dict[str, str] = {}
    for setting in SETTINGS:
        for flag in setting.flags:
            assert flag not in seen, f"{flag} is used by {seen[flag]} and {setting.name}"
            seen[flag] = setting.name


def test_kinds_of_the_repeatable_and_switch_settings():
    assert BY_NAME["bind"].kind == APPEND
    assert BY_NAME["raw_env"].kind == APPEND
    assert BY_NAME["preload_app"].kind == SWITCH
    assert BY_NAME["workers"].kind == VALUE


def test_every_setting_has_help_and_a_default_its_own_parser_accepts():
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
        if setting.kind != HOOK and setting.supported and setting.name not in ("user", "group"):
            assert setting.parse(setting.default) == setting.default, setting.name


def test_every_setting_is_supported():
    assert all(s.supported for s in SETTINGS)


# -- the command line is generated from the registry -------------------------------


def test_help_lists_every_flag_and_help_text():
    text = build_parser().format_help()
    for setting in SETTINGS:
        for flag in setting.flags:
            assert flag in text, f"{flag} missing from --help"
        if setting.flags:
            assert setting.help.split()[0] in text
    for extra in ("--check-config", "--version", "APP"):
        assert extra in text


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.flags], ids=lambda s: s.name)
def test_every_flag_sets_its_setting(setting):
    parser = build_parser()
    for flag in setting.flags:
        switch = setting.kind in (SWITCH, SWITCH_OFF)
        namespace = parser.parse_args([flag] if switch else [flag, "x"])
        raw = getattr(namespace, setting.name)
        expected = setting.kind == SWITCH if switch else (["x"] if setting.kind == APPEND else "x")
        assert raw == expected, flag


@pytest.mark.parametrize("name,off_flag", [("suppress_ragged_eofs", "--no-suppress-ragged-eofs"),
                                           ("proxy_headers", "--no-proxy-headers")])
def test_settings_on_by_default_have_a_flag_that_turns_them_off(name, off_flag):
    assert BY_NAME[name].default is True
    assert getattr(build_parser().parse_args([off_flag]), name) is False


def test_help_shows_what_each_flag_does_and_true_defaults():
    text = " ".join(build_parser().format_help().split())
    assert "[default: 0o600]" in text and "[default: 384]" not in text
    assert "[default: True]" not in text and "[default: False]" not in text
    assert "--no-server-header Leave out the 'Server: clusterserve' header" in text


def test_repeatable_flags_collect_every_value():
    namespace = build_parser().parse_args(["-b", "a:1", "--bind", "b:2", "-e", "A=1", "-e", "B=2"])
    assert namespace.bind == ["a:1", "b:2"]
    assert namespace.raw_env == ["A=1", "B=2"]


def test_unset_flags_leave_no_value_so_lower_sources_show_through():
    namespace = build_parser().parse_args(["mod:app"])
    assert set(vars(namespace)) == {"app"}


# -- parsers -------------------------------------------------------------------------


def parse(name, raw):
    return BY_NAME[name].parse(raw)


def rejects(name, raw, match=None):
    with pytest.raises(ValueError, match=match):
        parse(name, raw)


@pytest.mark.parametrize("name,minimum", [
    ("workers", 1), ("threads", 1), ("backlog", 1), ("worker_connections", 1),
    ("timeout", 0), ("graceful_timeout", 0), ("keepalive", 0), ("max_requests", 0),
    ("max_requests_jitter", 0), ("limit_request_line", 0), ("limit_request_fields", 0),
    ("limit_request_field_size", 0),
])
def test_integers_with_minimums(name, minimum):
    assert parse(name, str(minimum)) == minimum
    assert parse(name, minimum + 7) == minimum + 7
    assert parse(name, f" {minimum + 3} ") == minimum + 3
    rejects(name, str(minimum - 1), match=f"at least {minimum}")
    rejects(name, minimum - 1, match=f"at least {minimum}")
    rejects(name, "three", match="expected an integer")
    rejects(name, "2.5", match="expected an integer")
    rejects(name, 2.0, match="expected an integer")
    rejects(name, True, match="expected an integer")
    rejects(name, "0x10", match="expected an integer")


@pytest.mark.parametrize("raw,expected", [
    (True, True), (False, False), ("true", True), ("True", True), ("yes", True), ("on", True),
    ("1", True), ("false", False), ("no", False), ("off", False), ("0", False), (" YES ", True),
])
def test_booleans(raw, expected):
    assert parse("preload_app", raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "", "2", None, [True]])
def test_bad_booleans(raw):
    rejects("preload_app", raw, match="expected true or false")


@pytest.mark.parametrize("raw,expected", [
    ("0o22", 0o22), ("022", 0o22), (18, 0o22), ("18", 18), ("0", 0), (0, 0), ("0o777", 0o777),
    ("0027", 0o27), ("0O027", 0o27),
])
def test_umask_takes_octal_strings_and_integers(raw, expected):
    assert parse("umask", raw) == expected


def test_umask_round_trips_every_mode():
    for mode in range(0o1000):
        assert parse("umask", oct(mode)) == mode
        assert parse("umask", "0" + format(mode, "o")) == mode
        assert parse("umask", mode) == mode


@pytest.mark.parametrize("raw", ["089", "0o8", "-1", "rwx", 1.5, True])
def test_bad_umasks(raw):
    rejects("umask", raw)


@pytest.mark.parametrize("raw,expected", [
    ("127.0.0.1:8000", ["127.0.0.1:8000"]),
    (["127.0.0.1:8000", "[::1]:9000"], ["127.0.0.1:8000", "[::1]:9000"]),
    ("[::1]:8000", ["[::1]:8000"]),
    ("[::]:0", ["[::]:0"]),
    ("localhost:65535", ["localhost:65535"]),
    ("unix:/tmp/app.sock", ["unix:/tmp/app.sock"]),
    ("unix:relative.sock", ["unix:relative.sock"]),
    ("fd://3", ["fd://3"]),
])
def test_bind_addresses(raw, expected):
    assert parse("bind", raw) == expected


@pytest.mark.parametrize("raw", [
    "::1:8000",          # IPv6 without brackets
    "[::1",              # unclosed bracket
    "[::1]8000",         # no colon after the bracket
    "[]:8000",           # empty IPv6 host
    "host:port",         # port not a number
    "host:65536",        # port out of range
    "host:-1",
    "unix:",             # no path
    "fd://",             # no number
    "fd://three",
    "",                  # nothing at all
    "   ",
    [],                  # no address at all
    ["127.0.0.1:8000", "nope:x"],  # one bad item in a list
    8000,                # not a string
])
def test_bad_bind_addresses_are_rejected(raw):
    rejects("bind", raw)


def test_forwarded_allow_ips_is_comma_separated():
    assert parse("forwarded_allow_ips", "10.0.0.1, 10.0.0.2,,") == ["10.0.0.1", "10.0.0.2"]
    assert parse("forwarded_allow_ips", "*") == ["*"]
    assert parse("forwarded_allow_ips", ["10.0.0.1", "10.0.0.2,10.0.0.3"]) == [
        "10.0.0.1", "10.0.0.2", "10.0.0.3"]
    rejects("forwarded_allow_ips", 10, match="list of strings")


def test_pythonpath_is_comma_separated():
    assert parse("pythonpath", "src,lib") == ["src", "lib"]
    assert parse("pythonpath", ["src", "a,b"]) == ["src", "a", "b"]


@pytest.mark.parametrize("name,good,bad", [
    ("worker_class", ["sync", "gthread", "wsgi", "asgi", "uvicorn.workers.UvicornWorker"],
     ["gevent", "eventlet", "SYNC", ""]),
    ("loglevel", ["debug", "info", "warning", "error", "critical"], ["verbose", "INFO", "warn"]),
    ("dispatch", ["shared", "round-robin", "reuseport"], ["round_robin", "random"]),
    ("interface", ["auto", "wsgi", "asgi"], ["rsgi", "ASGI"]),
])
def test_choices(name, good, bad):
    for value in good:
        assert parse(name, value) == value
    for value in bad:
        rejects(name, value, match="expected one of")
    rejects(name, 3)


def test_raw_env_is_key_value():
    assert parse("raw_env", "A=1") == ["A=1"]
    assert parse("raw_env", ["A=1", "B=x=y", "EMPTY="]) == ["A=1", "B=x=y", "EMPTY="]
    for bad in ("A", "=1", ["A=1", "B"], 3):
        rejects("raw_env", bad)


def test_user_and_group_by_name_and_number():
    me = pwd.getpwuid(os.getuid())
    my_group = grp.getgrgid(os.getgid())
    assert parse("user", me.pw_name) == me.pw_uid
    assert parse("user", str(me.pw_uid)) == me.pw_uid
    assert parse("user", 54321) == 54321
    assert parse("user", "54321") == 54321
    assert parse("user", None) is None
    assert parse("group", my_group.gr_name) == my_group.gr_gid
    assert parse("group", 54321) == 54321
    assert parse("group", "54321") == 54321
    rejects("user", "no-such-user-clusterserve", match="no such user")
    rejects("group", "no-such-group-clusterserve", match="no such group")


def test_chdir_must_be_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "file").write_text("")
    assert parse("chdir", "site") == str(tmp_path / "site")
    assert parse("chdir", str(tmp_path)) == str(tmp_path)
    rejects("chdir", "missing", match="no such directory")
    rejects("chdir", "file", match="no such directory")


def test_app_spec_is_checked_without_importing():
    assert parse("wsgi_app", "no_such_module_at_all:app") == "no_such_module_at_all:app"
    assert parse("wsgi_app", "pkg.mod:create(1, name='x')") == "pkg.mod:create(1, name='x')"
    for bad in ("a b:app", ":app", "mod:app:more", "mod:create(x)", "mod:a.b"):
        rejects("wsgi_app", bad)


def test_text_settings_reject_other_types():
    assert parse("pidfile", "/run/x.pid") == "/run/x.pid"
    rejects("pidfile", 3, match="expected a string")
    rejects("access_log_format", None, match="expected a string")


def test_hooks_must_be_callable():
    def hook(server):
        return server

    assert parse("on_starting", hook) is hook
    assert parse("on_starting", None) is None
    rejects("post_fork", 3, match="expected a callable")
    rejects("post_fork", "module.function", match="expected a callable")


def test_number_parser():
    parse_seconds = types.number(0.5)
    assert parse_seconds("1.5") == 1.5
    assert parse_seconds(2) == 2.0
    for bad in ("x", True, None, 0.1):
        with pytest.raises(ValueError):
            parse_seconds(bad)


@pytest.mark.parametrize("raw,expected", [
    ("TLS", "TLS"), ("SSLv23", "SSLv23"), ("PROTOCOL_TLSv1_2", "TLSv1_2"), ("TLSv1_1", "TLSv1_1"),
    (2, "TLS"), (5, "TLSv1_2"), ("5", "TLSv1_2"), (17, "TLS_SERVER"), ("TLSv1_3", "TLSv1_3"),
])
def test_ssl_version_takes_gunicorns_names_and_numbers(raw, expected):
    assert parse("ssl_version", raw) == expected


@pytest.mark.parametrize("raw", ["SSLv3", "SSLv2", "tls", 1, 99, "", True])
def test_bad_ssl_versions(raw):
    rejects("ssl_version", raw)


def test_cert_reqs_is_0_1_or_2():
    assert [parse("cert_reqs", raw) for raw in (0, "1", 2)] == [0, 1, 2]
    for raw in (3, -1, "CERT_REQUIRED"):
        rejects("cert_reqs", raw)


@pytest.mark.parametrize("raw,expected", [
    ("off", "off"), ("v1", "v1"), ("V2", "v2"), ("auto", "auto"), (True, "auto"), (False, "off"),
    ("true", "auto"), ("false", "off"),
])
def test_proxy_protocol_modes_and_gunicorns_boolean(raw, expected):
    assert parse("proxy_protocol", raw) == expected


def test_bad_proxy_protocol_modes():
    for raw in ("v3", "on", "", 1):
        rejects("proxy_protocol", raw)


@pytest.mark.parametrize("name", ["forwarded_allow_ips", "proxy_allow_ips"])
def test_trusted_addresses_are_addresses_networks_or_star(name):
    assert parse(name, "10.0.0.1, 10.1.0.0/16,::1,*") == ["10.0.0.1", "10.1.0.0/16", "::1", "*"]
    rejects(name, "10.0.0.1,proxy.example", match="proxy.example")


def test_secure_scheme_headers_is_a_dict_with_upper_case_names():
    assert parse("secure_scheme_headers", {"X-Scheme": "https"}) == {"X-SCHEME": "https"}
    rejects("secure_scheme_headers", "X-Scheme: https")
    rejects("secure_scheme_headers", {"X-Scheme": 1})
