"""Where settings come from: defaults, environment, config files, CLUSTERSERVE_CMD_ARGS, command line.

Later wins. Every value's source is recorded in ``cfg.sources``, and every
error is one line naming the setting and the source.
"""

from __future__ import annotations

import itertools
import textwrap

import pytest
import trustme

from clusterserve.config import ConfigError, UsageError, load_config
from clusterserve.config.settings import HOOK, SETTINGS

APP = "tests.apps.basic:app"


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working directory, so no clusterserve.toml or pyproject.toml is found by accident."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(*argv, env=None):
    return load_config(list(argv), environ=dict(env or {}))


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def config_error(*argv, env=None, error=ConfigError):
    with pytest.raises(error) as info:
        load(*argv, env=env)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# -- precedence: every pair of sources --------------------------------------------

LAYERS = ("default", "environment", "file", "GUNICORN_CMD_ARGS", "CLUSTERSERVE_CMD_ARGS", "command line")

# What each layer sets, and the source it reports, for two settings.
LAYER_VALUES = {
    "workers": {
        "default": (1, "default"),
        "environment": (2, "environment variable WEB_CONCURRENCY"),
        "file": (3, "config file clusterserve.toml"),
        "GUNICORN_CMD_ARGS": (6, "GUNICORN_CMD_ARGS"),
        "CLUSTERSERVE_CMD_ARGS": (4, "CLUSTERSERVE_CMD_ARGS"),
        "command line": (5, "command line"),
    },
    "bind": {
        "default": (["127.0.0.1:8000"], "default"),
        "environment": (["0.0.0.0:2002"], "environment variable PORT"),
        "file": (["127.0.0.1:3003"], "config file clusterserve.toml"),
        "GUNICORN_CMD_ARGS": (["127.0.0.1:6006"], "GUNICORN_CMD_ARGS"),
        "CLUSTERSERVE_CMD_ARGS": (["127.0.0.1:4004"], "CLUSTERSERVE_CMD_ARGS"),
        "command line": (["127.0.0.1:5005"], "command line"),
    },
}


def apply_layers(layers, cwd):
    argv, env = [APP], {}
    if "environment" in layers:
        env.update(WEB_CONCURRENCY="2", PORT="2002")
    if "file" in layers:
        write(cwd / "clusterserve.toml", 'workers = 3\nbind = "127.0.0.1:3003"\n')
    if "GUNICORN_CMD_ARGS" in layers:
        env["GUNICORN_CMD_ARGS"] = "--workers=6 -b 127.0.0.1:6006"
    if "CLUSTERSERVE_CMD_ARGS" in layers:
        env["CLUSTERSERVE_CMD_ARGS"] = "-w 4 --bind 127.0.0.1:4004"
    if "command line" in layers:
        argv += ["-w", "5", "-b", "127.0.0.1:5005"]
    return argv, env


@pytest.mark.parametrize("setting", sorted(LAYER_VALUES))
@pytest.mark.parametrize("lower,higher", list(itertools.combinations(LAYERS, 2)),
                         ids=lambda layer: layer.replace(" ", "-"))
def test_later_source_wins(cwd, setting, lower, higher):
    argv, env = apply_layers({lower, higher}, cwd)
    cfg = load(*argv, env=env)
    value, source = LAYER_VALUES[setting][higher]
    assert getattr(cfg, setting) == value
    assert cfg.sources[setting] == source


def test_all_sources_at_once_each_reports_itself(cwd):
    write(cwd / "clusterserve.toml", 'threads = 3\nbacklog = 300\ntimeout = 40\n')
    env = {"WEB_CONCURRENCY": "2", "PORT": "2002", "FORWARDED_ALLOW_IPS": "10.0.0.1,10.0.0.2",
           "CLUSTERSERVE_CMD_ARGS": "--backlog 400 --keep-alive 7 --preload"}
    cfg = load("--keep-alive", "9", "--max-requests", "100", APP, env=env)
    expected = {
        "workers": (2, "environment variable WEB_CONCURRENCY"),
        "bind": (["0.0.0.0:2002"], "environment variable PORT"),
        "forwarded_allow_ips": (["10.0.0.1", "10.0.0.2"], "environment variable FORWARDED_ALLOW_IPS"),
        "threads": (3, "config file clusterserve.toml"),
        "timeout": (40, "config file clusterserve.toml"),
        "backlog": (400, "CLUSTERSERVE_CMD_ARGS"),
        "preload_app": (True, "CLUSTERSERVE_CMD_ARGS"),
        "keepalive": (9, "command line"),
        "max_requests": (100, "command line"),
        "wsgi_app": (APP, "command line"),
        "graceful_timeout": (30, "default"),
        "config": ("clusterserve.toml", "working directory"),
    }
    for name, (value, source) in expected.items():
        assert (getattr(cfg, name), cfg.sources[name]) == (value, source), name
    assert set(cfg.sources) == {s.name for s in SETTINGS}


def test_defaults_only(cwd):
    cfg = load(APP)
    for setting in SETTINGS:
        assert cfg.values[setting.name] == (APP if setting.name == "wsgi_app" else setting.default)
        assert cfg.sources[setting.name] == ("command line" if setting.name == "wsgi_app" else "default")
    assert cfg.config is None and cfg.warnings == [] and cfg.check_config is False


def test_empty_environment_variables_are_not_set(cwd):
    cfg = load(APP, env={"PORT": "", "WEB_CONCURRENCY": "", "CLUSTERSERVE_CMD_ARGS": ""})
    assert cfg.sources["bind"] == cfg.sources["workers"] == "default"


def test_repeated_bind_on_a_higher_source_replaces_the_lower_list(cwd):
    write(cwd / "clusterserve.toml", 'bind = ["127.0.0.1:1", "127.0.0.1:2"]\n')
    cfg = load("-b", "127.0.0.1:3", "-b", "[::1]:4", APP)
    assert cfg.bind == ["127.0.0.1:3", "[::1]:4"]
    assert load(APP).bind == ["127.0.0.1:1", "127.0.0.1:2"]


def test_app_from_a_config_file_and_the_command_line_wins(cwd):
    write(cwd / "clusterserve.toml", 'wsgi_app = "tests.apps.basic:slow"\n')
    assert load().wsgi_app == "tests.apps.basic:slow"
    assert load().sources["wsgi_app"] == "config file clusterserve.toml"
    assert load(APP).wsgi_app == APP


def test_check_config_from_the_command_line_or_cmd_args(cwd):
    assert load("--check-config", APP).check_config is True
    assert load(APP, env={"CLUSTERSERVE_CMD_ARGS": "--check-config"}).check_config is True
    assert load(APP).check_config is False


# -- which config file ------------------------------------------------------------


FILE_KINDS = ("clusterserve.toml", "pyproject.toml", "-c toml", "-c python")


def make_file(kind, cwd, body):
    """Write a config file of ``kind`` holding the TOML/Python-compatible ``body``."""
    if kind == "clusterserve.toml":
        write(cwd / "clusterserve.toml", body)
        return [], "config file clusterserve.toml"
    if kind == "pyproject.toml":
        write(cwd / "pyproject.toml", '[project]\nname = "x"\n\n[tool.clusterserve]\n' + body)
        return [], "config file pyproject.toml [tool.clusterserve]"
    if kind == "-c toml":
        (cwd / "conf").mkdir()
        write(cwd / "conf" / "server.toml", body)
        return ["-c", "conf/server.toml"], "config file conf/server.toml"
    write(cwd / "gunicorn.conf.py", body)
    return ["-c", "gunicorn.conf.py"], "config file gunicorn.conf.py"


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_each_kind_of_file_sits_between_environment_and_cmd_args(cwd, kind):
    argv, label = make_file(kind, cwd, 'workers = 3\nthreads = 3\nbacklog = 3\n')
    env = {"WEB_CONCURRENCY": "2", "CLUSTERSERVE_CMD_ARGS": "--threads 4"}
    cfg = load(*argv, "--backlog", "5", APP, env=env)
    assert (cfg.workers, cfg.sources["workers"]) == (3, label)
    assert (cfg.threads, cfg.sources["threads"]) == (4, "CLUSTERSERVE_CMD_ARGS")
    assert (cfg.backlog, cfg.sources["backlog"]) == (5, "command line")


def test_clusterserve_toml_wins_over_pyproject(cwd):
    write(cwd / "clusterserve.toml", "workers = 3\n")
    write(cwd / "pyproject.toml", "[tool.clusterserve]\nworkers = 7\nthreads = 7\n")
    cfg = load(APP)
    assert cfg.workers == 3 and cfg.threads == 1
    assert cfg.config == "clusterserve.toml"


def test_given_file_replaces_the_working_directory_files(cwd):
    write(cwd / "clusterserve.toml", "workers = 3\nthreads = 3\n")
    write(cwd / "other.toml", "workers = 6\n")
    cfg = load("-c", "other.toml", APP)
    assert (cfg.workers, cfg.threads) == (6, 1)
    assert (cfg.config, cfg.sources["config"]) == ("other.toml", "command line")


def test_config_file_named_in_cmd_args(cwd):
    write(cwd / "other.toml", "workers = 6\n")
    cfg = load(APP, env={"CLUSTERSERVE_CMD_ARGS": "--config other.toml"})
    assert (cfg.workers, cfg.sources["workers"]) == (6, "config file other.toml")
    assert cfg.sources["config"] == "CLUSTERSERVE_CMD_ARGS"


def test_pyproject_without_our_table_is_no_config(cwd):
    write(cwd / "pyproject.toml", '[project]\nname = "x"\n[tool.other]\nanything = 1\n')
    cfg = load(APP)
    assert cfg.config is None
    assert cfg.sources["workers"] == "default"


def test_pyproject_with_our_key_not_a_table_is_an_error(cwd):
    write(cwd / "pyproject.toml", "[tool]\nclusterserve = 5\n")
    message = config_error(APP)
    assert "pyproject.toml [tool.clusterserve]" in message and "expected a table" in message


def test_pyproject_errors_name_the_table(cwd):
    write(cwd / "pyproject.toml", "[tool.clusterserve]\nworkers = 'x'\n")
    message = config_error(APP)
    assert message.startswith("setting 'workers' from config file pyproject.toml [tool.clusterserve]:")


# -- TOML files are strict -----------------------------------------------------


def test_toml_takes_native_and_string_values(cwd):
    write(cwd / "clusterserve.toml", """
        bind = ["127.0.0.1:9001", "unix:/tmp/x.sock"]
        umask = 0o027
        preload_app = true
        forwarded_allow_ips = "10.0.0.1, 10.0.0.2"
        raw_env = ["A=1", "B=2"]
        loglevel = "debug"
        timeout = "45"
    """)
    cfg = load(APP)
    assert cfg.bind == ["127.0.0.1:9001", "unix:/tmp/x.sock"]
    assert cfg.umask == 0o27
    assert cfg.preload_app is True
    assert cfg.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]
    assert cfg.raw_env == ["A=1", "B=2"]
    assert cfg.loglevel == "debug"
    assert cfg.timeout == 45


def test_toml_unknown_key_is_an_error(cwd):
    write(cwd / "clusterserve.toml", "wrokers = 2\n")
    message = config_error(APP)
    assert message == "config file clusterserve.toml: unknown setting 'wrokers'"


def test_toml_gunicorn_setting_refused_is_an_error_and_a_no_op_is_noted(cwd):
    write(cwd / "clusterserve.toml", "syslog = true\n")
    message = config_error(APP)
    assert message.startswith("setting 'syslog' from config file clusterserve.toml: not supported:")
    write(cwd / "clusterserve.toml", 'worker_tmp_dir = "/dev/shm"\nsyslog = false\n')
    cfg = load(APP)
    assert [note.split(": ")[1] for note in cfg.notes] == ["gunicorn setting 'worker_tmp_dir' has no effect here"]


def test_toml_unknown_setting_is_an_error(cwd):
    write(cwd / "clusterserve.toml", "worker = 2\n")
    assert "unknown setting 'worker'" in config_error(APP)


def test_toml_hook_is_an_error(cwd):
    write(cwd / "clusterserve.toml", 'post_fork = "mymodule.post_fork"\n')
    message = config_error(APP)
    assert message.startswith("setting 'post_fork' from config file clusterserve.toml:")
    assert "Python config file" in message


def test_toml_wrong_type_names_setting_and_file(cwd):
    (cwd / "conf").mkdir()
    write(cwd / "conf" / "bad.toml", 'workers = "three"\n')
    message = config_error("-c", "conf/bad.toml", APP)
    assert message.startswith("setting 'workers' from config file conf/bad.toml:")
    assert "'three'" in message


def test_toml_bad_bind_names_setting_and_file(cwd):
    write(cwd / "clusterserve.toml", 'bind = ["127.0.0.1:8000", "::1:8000"]\n')
    message = config_error(APP)
    assert message.startswith("setting 'bind' from config file clusterserve.toml:")
    assert "::1:8000" in message


def test_invalid_toml_names_the_file(cwd):
    write(cwd / "clusterserve.toml", "workers = [\n")
    assert config_error(APP).startswith("config file clusterserve.toml: invalid TOML")


def test_missing_config_files(cwd):
    assert "cannot read" in config_error("-c", "missing.toml", APP)
    assert config_error("-c", "missing.py", APP) == "config file missing.py: no such file"


# -- Python config files ------------------------------------------------------------


def test_python_config_reads_settings_and_hooks_and_ignores_other_names(cwd):
    write(cwd / "gunicorn.conf.py", """
        import multiprocessing
        import os
        from os.path import join

        def _cores():
            return 2

        def helper(x):
            return x * 2

        workers = helper(_cores())
        bind = "127.0.0.1:" + str(9000 + 1)
        threads = int(os.environ.get("NOT_SET_ANYWHERE", "3"))
        preload_app = True
        settings_dir = join("a", "b")
        cpu = multiprocessing.cpu_count()

        def post_fork(server, worker):
            server.append(worker)

        def on_starting(server):
            pass
    """)
    cfg = load("-c", "gunicorn.conf.py", APP)
    assert (cfg.workers, cfg.bind, cfg.threads, cfg.preload_app) == (4, ["127.0.0.1:9001"], 3, True)
    assert callable(cfg.post_fork) and callable(cfg.on_starting)
    calls = []
    cfg.post_fork(calls, "worker")
    assert calls == ["worker"]
    assert cfg.sources["post_fork"] == "config file gunicorn.conf.py"
    assert cfg.when_ready is None and cfg.sources["when_ready"] == "default"
    assert cfg.warnings == []
    for ignored in ("multiprocessing", "os", "join", "helper", "settings_dir", "cpu", "_cores"):
        assert ignored not in cfg.values


def test_python_config_notes_gunicorn_settings_without_effect_and_refuses_others(cwd):
    write(cwd / "gunicorn.conf.py", """
        workers = 2
        worker_tmp_dir = "/dev/shm"
        tmp_upload_dir = "/tmp"
        spew = False
    """)
    cfg = load("-c", "gunicorn.conf.py", APP)
    assert cfg.workers == 2
    assert cfg.warnings == []
    assert len(cfg.notes) == 2
    for name in ("worker_tmp_dir", "tmp_upload_dir"):
        [line] = [note for note in cfg.notes if f"'{name}'" in note]
        assert line.startswith("config file gunicorn.conf.py:")
        assert "\n" not in line
    write(cwd / "gunicorn.conf.py", "workers = 2\nspew = True\n")
    assert config_error("-c", "gunicorn.conf.py", APP).startswith(
        "setting 'spew' from config file gunicorn.conf.py: not supported:")


def test_python_config_ignores_uvicorns_address_names_used_as_variables(cwd):
    write(cwd / "gunicorn.conf.py", """
        import os
        host = os.environ.get("HOST", "0.0.0.0")
        port = os.environ.get("PORT", "8000")
        bind = f"{host}:{port}"
    """)
    cfg = load(APP)
    assert cfg.bind == ["0.0.0.0:8000"] and cfg.port is None and cfg.host is None


def test_python_config_hook_that_is_not_callable_is_an_error(cwd):
    write(cwd / "gunicorn.conf.py", "post_fork = 'not a function'\n")
    message = config_error("-c", "gunicorn.conf.py", APP)
    assert message.startswith("setting 'post_fork' from config file gunicorn.conf.py:")
    assert "callable" in message


def test_python_config_wrong_type_names_setting_and_file(cwd):
    write(cwd / "conf.py", "workers = '4 workers'\n")
    assert config_error("-c", "conf.py", APP).startswith("setting 'workers' from config file conf.py:")


@pytest.mark.parametrize("body,error", [
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
    ("import no_such_module_for_clusterserve", "ModuleNotFoundError"),
    ("workers = = 2", "SyntaxError"),
    ("import sys; sys.exit(4)", "SystemExit: 4"),
])
def test_python_config_that_fails_to_run_is_an_error(cwd, body, error):
    write(cwd / "conf.py", body + "\n")
    message = config_error("-c", "conf.py", APP)
    assert message.startswith("config file conf.py: failed to run:")
    assert error in message


def test_python_config_can_set_unsupported_settings_to_their_default(cwd):
    write(cwd / "conf.py", "certfile = None\nkeyfile = None\n")
    assert load("-c", "conf.py", APP).certfile is None


# -- TLS and PROXY protocol settings are checked when the config loads --------------------


@pytest.mark.parametrize("name,flag", [("certfile", "--certfile"), ("ca_certs", "--ca-certs")])
def test_a_missing_tls_file_names_its_setting_from_every_source(cwd, name, flag):
    extra = []
    if name == "ca_certs":  # needs a certificate that loads
        trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
            str(cwd / "server.pem"))
        extra = ["--certfile", "server.pem", "--cert-reqs", "2"]
    assert config_error(flag, "x.pem", *extra, APP) == (
        f"setting '{name}' from command line: no such file: 'x.pem'")
    assert config_error(*extra, APP, env={"CLUSTERSERVE_CMD_ARGS": f"{flag} x.pem"}) == (
        f"setting '{name}' from CLUSTERSERVE_CMD_ARGS: no such file: 'x.pem'")
    write(cwd / "conf.py", f'{name} = "x.pem"\n')
    assert config_error("-c", "conf.py", *extra, APP) == (
        f"setting '{name}' from config file conf.py: no such file: 'x.pem'")


def test_proxy_protocol_with_the_asgi_interface_is_accepted(cwd):
    assert load("--proxy-protocol", "v1", "--interface", "asgi", APP).proxy_protocol == "v1"
    assert load("-k", "uvicorn.workers.UvicornWorker", "--proxy-protocol=auto", APP).proxy_protocol == "auto"


def test_proxy_protocol_flag_alone_and_gunicorns_boolean_mean_auto(cwd):
    assert load("--proxy-protocol", "-b", "127.0.0.1:1", APP).proxy_protocol == "auto"
    assert load("--proxy-protocol", "v2", APP).proxy_protocol == "v2"
    write(cwd / "conf.py", "proxy_protocol = True\n")
    assert load("-c", "conf.py", APP).proxy_protocol == "auto"


def test_reuseport_dispatch_with_a_unix_bind_is_refused(cwd):
    message = config_error("--dispatch", "reuseport", "-b", "unix:/tmp/cs.sock", APP)
    assert message.startswith("setting 'dispatch' from command line")
    assert "reuseport" in message


# -- bad input: one line naming the setting and the source -----------------------------


def test_unknown_flag(cwd):
    assert config_error("--wrokers", "2", APP, error=UsageError).startswith(
        "command line: unrecognized arguments: --wrokers")
    assert config_error(APP, env={"CLUSTERSERVE_CMD_ARGS": "--nope"}, error=UsageError).startswith(
        "CLUSTERSERVE_CMD_ARGS: unrecognized arguments: --nope")


def test_flag_without_its_value(cwd):
    message = config_error(APP, "-w", error=UsageError)
    assert message.startswith("command line:") and "-w" in message


@pytest.mark.parametrize("argv,setting,flags,value", [
    (["-w", "many"], "workers", "-w/--workers", "'many'"),
    (["--workers", "0"], "workers", "-w/--workers", "at least 1"),
    (["-t", "-5"], "timeout", "-t/--timeout", "at least 0"),
    (["--threads", "1.5"], "threads", "--threads", "'1.5'"),
    (["-b", "localhost:http"], "bind", "-b/--bind", "localhost:http"),
    (["-b", "127.0.0.1:1", "-b", "[::1"], "bind", "-b/--bind", "[::1"),
    (["-m", "0o9"], "umask", "-m/--umask", "0o9"),
    (["-k", "gevent"], "worker_class", "-k/--worker-class", "gevent"),
    (["--log-level", "loud"], "loglevel", "--log-level", "loud"),
    (["-e", "NOVALUE"], "raw_env", "-e/--env", "NOVALUE"),
    (["--dispatch", "random"], "dispatch", "--dispatch", "random"),
    (["-u", "no-such-user-clusterserve"], "user", "-u/--user", "no-such-user"),
    (["--chdir", "/no/such/dir/clusterserve"], "chdir", "--chdir", "/no/such/dir"),
])
def test_wrong_value_on_the_command_line_and_in_cmd_args(cwd, argv, setting, flags, value):
    message = config_error(*argv, APP)
    assert message.startswith(f"setting '{setting}' from command line ({flags}):")
    assert value in message
    message = config_error(APP, env={"CLUSTERSERVE_CMD_ARGS": " ".join(argv)})
    assert message.startswith(f"setting '{setting}' from CLUSTERSERVE_CMD_ARGS ({flags}):")


@pytest.mark.parametrize("variable,value,setting", [
    ("WEB_CONCURRENCY", "lots", "workers"),
    ("WEB_CONCURRENCY", "0", "workers"),
    ("PORT", "http", "bind"),
    ("PORT", "70000", "bind"),
])
def test_wrong_value_in_the_environment(cwd, variable, value, setting):
    message = config_error(APP, env={variable: value})
    assert message.startswith(f"setting '{setting}' from environment variable {variable}:")


def test_bad_app_spec_names_the_source(cwd):
    assert config_error("not a module:app").startswith("setting 'wsgi_app' from command line (APP):")
    write(cwd / "clusterserve.toml", 'wsgi_app = "mod:factory(os.environ)"\n')
    message = config_error()
    assert message.startswith("setting 'wsgi_app' from config file clusterserve.toml:")
    assert "literals" in message


def test_app_in_cmd_args_is_an_error(cwd):
    message = config_error(env={"CLUSTERSERVE_CMD_ARGS": APP}, error=UsageError)
    assert message.startswith("CLUSTERSERVE_CMD_ARGS:") and "APP" in message


def test_unbalanced_quote_in_cmd_args(cwd):
    message = config_error(APP, env={"CLUSTERSERVE_CMD_ARGS": "--name 'unclosed"}, error=UsageError)
    assert message.startswith("CLUSTERSERVE_CMD_ARGS:")


def test_cmd_args_are_split_like_a_shell(cwd):
    cfg = load(APP, env={"CLUSTERSERVE_CMD_ARGS": "--name 'my app' --access-logformat '%(h)s %(r)s'"})
    assert cfg.proc_name == "my app"
    assert cfg.access_log_format == "%(h)s %(r)s"


# -- describe(): what --check-config prints -------------------------------------------


def test_describe_has_every_setting_with_its_source(cwd):
    write(cwd / "gunicorn.conf.py", "workers = 3\ndef on_exit(server):\n    pass\n")
    cfg = load("-c", "gunicorn.conf.py", "--threads", "2", APP, env={"PORT": "7000"})
    lines = cfg.describe().splitlines()
    by_name = {line.split(" = ", 1)[0]: line for line in lines}
    assert by_name["workers"] == "workers = 3  # config file gunicorn.conf.py"
    assert by_name["threads"] == "threads = 2  # command line"
    assert by_name["bind"] == "bind = ['0.0.0.0:7000']  # environment variable PORT"
    assert by_name["backlog"] == "backlog = 2048  # default"
    assert by_name["on_exit"] == "on_exit = <on_exit>  # config file gunicorn.conf.py"
    for setting in SETTINGS:
        if setting.kind == HOOK and setting.name != "on_exit":
            assert setting.name not in by_name
        else:
            assert setting.name in by_name


# -- logging settings ---------------------------------------------------------------------


def test_logconfig_dict_is_a_toml_table(cwd):
    write(cwd / "clusterserve.toml", """
        [logconfig_dict.loggers.clusterserve]
        level = "DEBUG"
    """)
    cfg = load(APP)
    assert cfg.logconfig_dict == {"loggers": {"clusterserve": {"level": "DEBUG"}}}
    assert cfg.sources["logconfig_dict"] == "config file clusterserve.toml"


def test_logconfig_dict_must_be_a_table(cwd):
    write(cwd / "clusterserve.toml", 'logconfig_dict = "logging.ini"\n')
    assert config_error(APP) == ("setting 'logconfig_dict' from config file clusterserve.toml: "
                                 "expected a table (a dict), got 'logging.ini'")


def test_log_config_files_are_made_absolute(cwd):
    (cwd / "logging.ini").write_text("")
    assert load(APP, "--log-config", "logging.ini").logconfig == str(cwd / "logging.ini")


# -- which config file: -c, else the first default one found ----------------------


def test_gunicorn_conf_py_in_the_working_directory_is_read(cwd):
    write(cwd / "gunicorn.conf.py", "workers = 3\n")
    cfg = load(APP)
    assert (cfg.workers, cfg.sources["workers"]) == (3, "config file gunicorn.conf.py")
    assert (cfg.config, cfg.sources["config"]) == ("gunicorn.conf.py", "working directory")


@pytest.mark.parametrize("present,read", [
    (("clusterserve.toml", "pyproject.toml", "gunicorn.conf.py"), "clusterserve.toml"),
    (("pyproject.toml", "gunicorn.conf.py"), "pyproject.toml [tool.clusterserve]"),
    (("clusterserve.toml", "gunicorn.conf.py"), "clusterserve.toml"),
    (("gunicorn.conf.py",), "gunicorn.conf.py"),
])
def test_one_default_config_file_is_read_and_the_others_are_named(cwd, present, read):
    workers = {"clusterserve.toml": 2, "pyproject.toml": 3, "gunicorn.conf.py": 4}
    files = {"clusterserve.toml": "workers = 2\n", "pyproject.toml": "[tool.clusterserve]\nworkers = 3\n",
             "gunicorn.conf.py": "workers = 4\n"}
    for name in present:
        write(cwd / name, files[name])
    cfg = load(APP)
    assert cfg.config == read
    assert cfg.workers == workers[read.split()[0]]
    skipped = [w for w in cfg.warnings if "is not read" in w]
    assert len(skipped) == len(present) - 1
    assert all(w.endswith(f"is not read: {read} is (one config file is read; give -c to choose)")
               for w in skipped)


def test_pyproject_without_the_table_does_not_hide_gunicorn_conf_py(cwd):
    write(cwd / "pyproject.toml", "[project]\nname = 'x'\n")
    write(cwd / "gunicorn.conf.py", "workers = 4\n")
    cfg = load(APP)
    assert (cfg.config, cfg.workers, cfg.warnings) == ("gunicorn.conf.py", 4, [])


def test_given_config_file_wins_over_the_default_ones_without_warnings(cwd):
    write(cwd / "gunicorn.conf.py", "workers = 4\n")
    write(cwd / "other.py", "workers = 5\n")
    cfg = load("-c", "other.py", APP)
    assert (cfg.workers, cfg.warnings) == (5, [])


def test_config_given_in_gunicorn_cmd_args_is_read_and_cmd_args_wins_over_it(cwd):
    write(cwd / "prod.py", "workers = 5\nthreads = 2\n")
    cfg = load(APP, env={"GUNICORN_CMD_ARGS": "-c prod.py --threads 3"})
    assert (cfg.workers, cfg.threads, cfg.config) == (5, 3, "prod.py")
    write(cwd / "other.py", "workers = 6\n")
    cfg = load(APP, env={"GUNICORN_CMD_ARGS": "-c prod.py", "CLUSTERSERVE_CMD_ARGS": "-c other.py"})
    assert cfg.workers == 6


def test_gunicorn_cmd_args_errors_name_the_variable(cwd):
    assert config_error(APP, env={"GUNICORN_CMD_ARGS": "--workers 0"}).startswith(
        "setting 'workers' from GUNICORN_CMD_ARGS")
    assert config_error(APP, env={"GUNICORN_CMD_ARGS": "other:app"}, error=UsageError).startswith(
        "GUNICORN_CMD_ARGS: the APP argument belongs on the command line")


def test_python_module_config(cwd):
    (cwd / "deploy").mkdir()
    write(cwd / "deploy" / "__init__.py", "")
    write(cwd / "deploy" / "gunicorn_settings.py", """
        workers = 3

        def post_fork(server, worker):
            pass
    """)
    cfg = load("-c", "python:deploy.gunicorn_settings", APP)
    assert (cfg.workers, cfg.sources["workers"]) == (3, "config file python:deploy.gunicorn_settings")
    assert callable(cfg.post_fork)
    write(cwd / "deploy" / "gunicorn_settings.py", "workers = 4\n")
    assert load("-c", "python:deploy.gunicorn_settings", APP).workers == 4  # read afresh (HUP)


def test_python_module_config_errors(cwd):
    assert "no module named 'nowhere_at_all'" in config_error("-c", "python:nowhere_at_all", APP)
    write(cwd / "broken_conf.py", "raise RuntimeError('nope')\n")
    message = config_error("-c", "python:broken_conf", APP)
    assert message == "config file python:broken_conf: failed to run: RuntimeError: nope"


def test_daemon_is_refused_under_systemd(cwd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    message = config_error("-D", APP)
    assert message.startswith("setting 'daemon' from command line: refused under systemd")


def test_ssl_context_hook_is_called_with_the_settings_and_the_default_factory(cwd):
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(cwd / "server.pem"))
    write(cwd / "gunicorn.conf.py", """
        import ssl
        seen = []

        def ssl_context(config, default_ssl_context_factory):
            context = default_ssl_context_factory()
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            seen.append(config.certfile)
            return context
    """)
    from clusterserve import tls

    cfg = load("--certfile", "server.pem", APP)
    context = tls.server_context(cfg.values)
    assert context.minimum_version.name == "TLSv1_3"
    assert cfg.ssl_context.__globals__["seen"][-1] == "server.pem"


@pytest.mark.parametrize("body,problem", [
    ("return None", "the hook returned NoneType, not an ssl.SSLContext"),
    ("raise ValueError('bad')", "the hook failed: ValueError: bad"),
])
def test_ssl_context_hook_that_fails_stops_the_start(cwd, body, problem):
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(cwd / "server.pem"))
    write(cwd / "gunicorn.conf.py", f"def ssl_context(config, factory):\n    {body}\n")
    message = config_error("--certfile", "server.pem", APP)
    assert message == f"setting 'ssl_context' from config file gunicorn.conf.py: {problem}"


def test_ssl_context_without_certfile_is_a_warning(cwd):
    write(cwd / "gunicorn.conf.py", "def ssl_context(config, factory):\n    return factory()\n")
    [warning] = load(APP).warnings
    assert "the hook is not called" in warning


def test_port_flag_with_port_in_the_environment_binds_loopback_as_uvicorn_does(cwd):
    cfg = load("--port", "8000", APP, env={"PORT": "5000"})
    assert cfg.bind == ["127.0.0.1:8000"]
    assert load("--host", "0.0.0.0", "--port", "8000", APP, env={"PORT": "5000"}).bind == ["0.0.0.0:8000"]
