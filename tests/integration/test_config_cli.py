"""The ``clusterserve`` command's configuration behaviour, as real ``python -m clusterserve`` processes.

--help, --version, --check-config (which never starts workers, so these are
quick), exit codes and the one-line errors on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from clusterserve import __version__
from clusterserve.config.settings import HOOK, SETTINGS
from clusterserve.config.sources import tomllib
from tests.harness import OUTSIDE_SETTINGS, ROOT

EXAMPLE = ROOT / "examples" / "clusterserve.toml"
APP = "tests.apps.basic:app"


def clusterserve(*args, cwd=ROOT, env=None, timeout=20):
    """Run ``python -m clusterserve ARGS``; return the completed process (text output)."""
    inherited = {k: v for k, v in os.environ.items() if k not in OUTSIDE_SETTINGS}
    return subprocess.run(
        [sys.executable, "-m", "clusterserve", *args],
        cwd=cwd, env={**inherited, **(env or {})}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )


def effective(stdout):
    """The --check-config listing as {name: (value text, source)}."""
    settings = {}
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        name, _, rest = line.partition(" = ")
        value, _, source = rest.rpartition("  # ")
        settings[name] = (value, source)
    return settings


def one_error_line(result, code=2):
    assert result.returncode == code, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clusterserve: error: ")
    assert result.stdout == ""
    return lines[0]


# -- help and version ---------------------------------------------------------------


def test_version():
    result = clusterserve("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"clusterserve {__version__}"


def test_help_lists_every_flag_of_the_registry():
    result = clusterserve("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: clusterserve [OPTIONS] APP")
    flags = [flag for setting in SETTINGS for flag in setting.flags]
    assert len(flags) > 40
    missing = [flag for flag in flags if flag not in result.stdout]
    assert not missing
    for text in ("--check-config", "--version", "CLUSTERSERVE_CMD_ARGS", "WEB_CONCURRENCY"):
        assert text in result.stdout
    # Help text comes from the registry, with % kept literal.
    assert "%(h)s" in result.stdout


# -- bad usage: one line, exit 2 -------------------------------------------------------


def test_no_app_is_a_usage_error(tmp_path):
    line = one_error_line(clusterserve(cwd=tmp_path))
    assert "no app given" in line


def test_unknown_flag():
    line = one_error_line(clusterserve("--no-such-flag", APP))
    assert line == "clusterserve: error: command line: unrecognized arguments: --no-such-flag"


def test_wrong_type_on_the_command_line():
    line = one_error_line(clusterserve("-w", "four", APP))
    assert line.startswith("clusterserve: error: setting 'workers' from command line (-w/--workers):")
    assert "'four'" in line


def test_bad_bind_on_the_command_line():
    line = one_error_line(clusterserve("--bind", "::1:8000", APP))
    assert line.startswith("clusterserve: error: setting 'bind' from command line (-b/--bind):")
    assert "::1:8000" in line


def test_bad_value_in_cmd_args():
    line = one_error_line(clusterserve(APP, env={"CLUSTERSERVE_CMD_ARGS": "-b localhost:http"}))
    assert line.startswith("clusterserve: error: setting 'bind' from CLUSTERSERVE_CMD_ARGS (-b/--bind):")


def test_unknown_flag_in_cmd_args():
    line = one_error_line(clusterserve(APP, env={"CLUSTERSERVE_CMD_ARGS": "--wrkers 2"}))
    assert line.startswith("clusterserve: error: CLUSTERSERVE_CMD_ARGS: unrecognized arguments: --wrkers")


def test_bad_environment_default():
    line = one_error_line(clusterserve(APP, env={"WEB_CONCURRENCY": "lots"}))
    assert line.startswith("clusterserve: error: setting 'workers' from environment variable WEB_CONCURRENCY:")
    line = one_error_line(clusterserve(APP, env={"PORT": "http"}))
    assert line.startswith("clusterserve: error: setting 'bind' from environment variable PORT:")


def test_bad_value_in_a_toml_file_names_its_path(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('bind = "127.0.0.1:99999"\n')
    line = one_error_line(clusterserve("-c", str(config), APP))
    assert line.startswith(f"clusterserve: error: setting 'bind' from config file {config}:")


def test_unknown_key_in_clusterserve_toml_in_the_working_directory(tmp_path):
    (tmp_path / "clusterserve.toml").write_text("wrokers = 2\n")
    line = one_error_line(clusterserve(APP, cwd=tmp_path))
    assert line == "clusterserve: error: config file clusterserve.toml: unknown setting 'wrokers'"


def test_non_callable_hook_in_a_python_file(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("post_fork = 42\n")
    line = one_error_line(clusterserve("-c", "gunicorn.conf.py", APP, cwd=tmp_path))
    assert line.startswith("clusterserve: error: setting 'post_fork' from config file gunicorn.conf.py:")


def test_missing_certificate_file_is_a_config_error():
    line = one_error_line(clusterserve("--certfile", "cert.pem", APP))
    assert line == "clusterserve: error: setting 'certfile' from command line: no such file: 'cert.pem'"


def test_bad_app_spec_is_a_usage_error():
    line = one_error_line(clusterserve("tests.apps.basic:create_app(os.environ)"))
    assert line.startswith("clusterserve: error: setting 'wsgi_app' from command line (APP):")


# -- --check-config -----------------------------------------------------------------------


def test_check_config_prints_every_setting_with_its_source_and_exits_0():
    result = clusterserve("--check-config", "-w", "3", APP)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    settings = effective(result.stdout)
    assert settings["workers"] == ("3", "command line")
    assert settings["wsgi_app"] == (repr(APP), "command line")
    assert settings["bind"] == ("['127.0.0.1:8000']", "default")
    for setting in SETTINGS:
        if setting.kind != HOOK:
            assert setting.name in settings
    assert result.stdout.splitlines()[-1] == f"# app {APP!r} loads and is served as WSGI"


def test_check_config_shows_every_source_in_one_run(tmp_path):
    (tmp_path / "clusterserve.toml").write_text("threads = 3\ntimeout = 40\n")
    env = {"PORT": "5123", "WEB_CONCURRENCY": "2", "CLUSTERSERVE_CMD_ARGS": "--timeout 50 --backlog 64",
           "PYTHONPATH": str(ROOT)}
    result = clusterserve("--check-config", "--backlog", "128", APP, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    settings = effective(result.stdout)
    assert settings["config"] == ("'clusterserve.toml'", "working directory")
    assert settings["bind"] == ("['0.0.0.0:5123']", "environment variable PORT")
    assert settings["workers"] == ("2", "environment variable WEB_CONCURRENCY")
    assert settings["threads"] == ("3", "config file clusterserve.toml")
    assert settings["timeout"] == ("50", "CLUSTERSERVE_CMD_ARGS")
    assert settings["backlog"] == ("128", "command line")
    assert settings["keepalive"] == ("2", "default")


def test_check_config_from_cmd_args_does_not_start_a_server():
    result = clusterserve(APP, "-b", "127.0.0.1:0", env={"CLUSTERSERVE_CMD_ARGS": "--check-config"})
    assert result.returncode == 0, result.stderr
    assert "Listening" not in result.stderr
    assert result.stdout.splitlines()[-1].endswith("is served as WSGI")


def test_check_config_with_a_python_config_file(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent("""
        import os

        workers = 2
        worker_tmp_dir = "/dev/shm"
        helper_value = os.sep

        def post_fork(server, worker):
            pass
    """))
    env = {"PYTHONPATH": str(ROOT)}
    result = clusterserve("-c", "gunicorn.conf.py", "--check-config", APP, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ("# config file gunicorn.conf.py: gunicorn setting 'worker_tmp_dir' has no effect here: "
            "heartbeats go over a socketpair") in result.stdout
    settings = effective(result.stdout)
    assert settings["workers"] == ("2", "config file gunicorn.conf.py")
    assert settings["post_fork"] == ("<post_fork>", "config file gunicorn.conf.py")
    assert "helper_value" not in settings and "worker_tmp_dir" not in settings


def test_check_config_app_that_fails_to_import_names_the_app():
    result = clusterserve("--check-config", "tests.apps.broken_import:app")
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert "'tests.apps.broken_import:app'" in line
    assert "RuntimeError: this module is broken on purpose" in line


@pytest.mark.parametrize("app,words", [
    ("tests.apps.basic:missing", "has no attribute 'missing'"),
    ("tests.apps.no_such_module:app", "no such module"),
])
def test_check_config_app_not_found_names_the_app(app, words):
    result = clusterserve("--check-config", app)
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert repr(app) in line and words in line


def test_check_config_with_chdir_and_pythonpath(tmp_path):
    name = f"cs_cli_app_{uuid.uuid4().hex[:8]}"
    for directory in ("project", "lib"):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / f"{name}_{directory}.py").write_text(
            "def app(environ, start_response):\n    return []\n")
    missing = clusterserve("--check-config", f"{name}_project:app")
    assert missing.returncode == 3 and "no such module" in missing.stderr
    found = clusterserve("--check-config", "--chdir", str(tmp_path / "project"), f"{name}_project:app")
    assert found.returncode == 0, found.stderr
    assert effective(found.stdout)["chdir"] == (repr(str(tmp_path / "project")), "command line")
    found = clusterserve("--check-config", "--pythonpath", str(tmp_path / "lib"), f"{name}_lib:app")
    assert found.returncode == 0, found.stderr


def test_check_config_factory_and_module_alone():
    result = clusterserve("--check-config", "tests.apps.basic:create_app('hey', punctuation='?')")
    assert result.returncode == 0, result.stderr
    result = clusterserve("--check-config", "tests.apps.basic")
    assert result.returncode == 0, result.stderr


def test_check_config_reports_an_asgi_app_as_asgi():
    result = clusterserve("--check-config", "tests.apps.basic:asgi_app")
    assert result.stdout.splitlines()[-1] == "# app 'tests.apps.basic:asgi_app' loads and is served as ASGI"


def test_check_config_applies_raw_env_before_loading_the_app(tmp_path):
    name = f"cs_env_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import os\nassert os.environ['CS_NEEDED'] == 'yes'\n"
        "def app(environ, start_response):\n    return []\n")
    env = {"PYTHONPATH": str(ROOT)}
    without = clusterserve("--check-config", f"{name}:app", cwd=tmp_path, env=env)
    assert without.returncode == 3 and "KeyError" in without.stderr
    with_env = clusterserve("--check-config", "-e", "CS_NEEDED=yes", f"{name}:app", cwd=tmp_path, env=env)
    assert with_env.returncode == 0, with_env.stderr


# -- the example config file ------------------------------------------------------------


def test_example_toml_is_accepted_and_every_key_comes_from_it():
    result = clusterserve("--check-config", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    settings = effective(result.stdout)
    keys = tomllib.loads(EXAMPLE.read_text())
    assert len(keys) >= 20
    for key in keys:
        _shown, source = settings[key]
        assert source == f"config file {EXAMPLE}", key
    assert settings["workers"][0] == "4"
    assert settings["umask"][0] == str(0o022)
    assert result.stdout.splitlines()[-1] == "# app 'examples.hello:app' loads and is served as WSGI"


def test_example_toml_is_commented():
    text = EXAMPLE.read_text()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 15
