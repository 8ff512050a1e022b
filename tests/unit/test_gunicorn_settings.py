"""Every gunicorn setting is acted on, accepted without effect, or refused, and
docs/migrating.md's table says which, as the code does.

The list of gunicorn's settings comes from gunicorn itself (27.0, pinned in
the test extra) and from the reference beside the repository when it is there.
"""

from __future__ import annotations

import csv
import re
import textwrap

import gunicorn.config
import pytest

from clusterserve.config import ConfigError, build_parser, load_config
from clusterserve.config import gunicorn as registry
from clusterserve.config.reference import SHOWN, TABLE_END, TABLE_START
from clusterserve.config.settings import BY_NAME, HOOK
from tests.harness import ROOT

THEIRS = {setting.name: setting for setting in gunicorn.config.KNOWN_SETTINGS}
REFERENCE = ROOT.parent / "shared" / "reference" / "gunicorn-settings.tsv"
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| (?P<here>[^|]+?) \|")


def table_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "migrating.md").read_text()
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        match = ROW.match(line)
        if match:
            assert match["name"] not in rows, f"two rows for {match['name']}"
            rows[match["name"]] = match["here"]
    return rows


def test_the_registry_knows_every_setting_of_the_pinned_gunicorn():
    assert set(registry.GUNICORN_NAMES) == set(THEIRS)
    assert len(registry.GUNICORN_NAMES) == len(set(registry.GUNICORN_NAMES))


def test_the_registry_knows_every_setting_of_the_reference_list():
    """The reference lists gunicorn 26.2's settings; 27.0 added one."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not beside this checkout")
    with REFERENCE.open() as stream:
        names = {row["name"] for row in csv.DictReader(stream, delimiter="\t")}
    assert set(registry.GUNICORN_NAMES) - names == {"websocket_max_message_size"}
    assert names <= set(registry.GUNICORN_NAMES)


def test_each_setting_is_in_exactly_one_group():
    for name in registry.GUNICORN_NAMES:
        foreign = name in registry.FOREIGN_BY_NAME
        acted = name in BY_NAME or name in registry.ALIASES
        assert foreign != acted, name
    assert set(registry.FOREIGN_BY_NAME) <= set(registry.GUNICORN_NAMES)
    assert set(registry.ALIASES) <= set(registry.GUNICORN_NAMES)


def test_the_table_in_migrating_md_has_one_row_per_setting_matching_the_code():
    rows = table_rows()
    assert set(rows) == set(registry.GUNICORN_NAMES)
    for name, here in rows.items():
        group, _ = registry.disposition(name, BY_NAME)
        assert here == SHOWN[group], f"{name}: the table says {here!r}, the code {SHOWN[group]!r}"


def test_the_groups_the_issue_names():
    group = {name: registry.disposition(name, BY_NAME)[0] for name in registry.GUNICORN_NAMES}
    assert group["worker_tmp_dir"] == registry.NO_OP
    for acted in ("daemon", "ssl_context", "config", "reuse_port", "enable_stdio_inheritance",
                  "print_config", "check_config", "control_socket"):
        assert group[acted] == registry.ACTED, acted
    for refused in ("syslog", "paste", "sendfile", "http_protocols", "spew", "dirty_workers"):
        assert group[refused] == registry.REFUSED, refused


@pytest.mark.parametrize("name", sorted(THEIRS), ids=str)
def test_gunicorns_flags_are_all_accepted(name):
    flags = THEIRS[name].cli or []
    target = registry.ALIASES.get(name, name)
    if name in registry.FOREIGN_BY_NAME:
        ours = registry.FOREIGN_BY_NAME[name].flags
    else:
        ours = BY_NAME[target].flags
    missing = [flag for flag in flags if flag not in ours]
    assert not missing, f"{name}: gunicorn's {missing} not accepted"


@pytest.mark.parametrize("foreign", [f for f in registry.FOREIGN if f.disposition == registry.REFUSED],
                         ids=lambda f: f.name)
def test_a_refused_setting_takes_gunicorns_default(foreign):
    default = gunicorn.config.Config().settings[foreign.name].get()
    assert foreign.accepts(default), f"{foreign.name}: gunicorn's default {default!r} is refused"


REFUSED_VALUES = {
    "spew": "True", "sendfile": "False", "logger_class": "'myapp.logging.JsonLogger'",
    "syslog": "True", "enable_backlog_metric": "True", "paste": "'development.ini'",
    "protocol": "'uwsgi'", "http_protocols": "'h2,h1'", "http2_cleartext": "'upgrade'",
    "raw_paste_global_conf": "['key=value']", "permit_obsolete_folding": "True",
    "strip_header_spaces": "True", "permit_unconventional_http_method": "True",
    "permit_unconventional_http_version": "True", "casefold_http_method": "True",
    "forwarder_headers": "'SCRIPT_NAME,PATH_INFO,X_USER'", "dirty_apps": "['myapp.tasks:Pool']",
    "dirty_workers": "2", "websocket_max_message_size": "1024",
}


def test_every_refused_setting_has_a_value_to_refuse_here():
    refused = {f.name for f in registry.FOREIGN if f.disposition == registry.REFUSED}
    assert refused == set(REFUSED_VALUES)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_conf(path, text):
    path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("name", sorted(REFUSED_VALUES))
def test_a_refused_setting_stops_the_start_naming_it(cwd, name):
    write_conf(cwd / "gunicorn.conf.py", f"{name} = {REFUSED_VALUES[name]}\n")
    with pytest.raises(ConfigError, match=rf"^setting '{name}' from config file gunicorn.conf.py: not supported: "):
        load_config(["app:app"], environ={})


@pytest.mark.parametrize("foreign", [f for f in registry.FOREIGN if f.disposition == registry.NO_OP],
                         ids=lambda f: f.name)
def test_a_no_op_setting_is_taken_with_a_note(cwd, foreign):
    value = "lambda *args: None" if foreign.name.startswith(("on_", "dirty_post", "dirty_worker")) \
        else "'/dev/shm'"
    write_conf(cwd / "gunicorn.conf.py", f"{foreign.name} = {value}\n")
    cfg = load_config(["app:app"], environ={})
    assert any(f"'{foreign.name}' has no effect here: {foreign.reason}" in note for note in cfg.notes)


def test_refused_flags_on_the_command_line_and_in_gunicorn_cmd_args(cwd):
    with pytest.raises(ConfigError, match=r"setting 'spew' from command line \(--spew\)"):
        load_config(["app:app", "--spew"], environ={})
    with pytest.raises(ConfigError, match=r"setting 'protocol' from GUNICORN_CMD_ARGS \(--protocol\)"):
        load_config(["app:app"], environ={"GUNICORN_CMD_ARGS": "--protocol uwsgi"})
    cfg = load_config(["app:app", "--worker-tmp-dir", "/dev/shm"], environ={})
    assert cfg.notes and "worker_tmp_dir" in cfg.notes[0]


def test_refused_settings_at_gunicorns_default_pass(cwd):
    write_conf(cwd / "gunicorn.conf.py", """\
        syslog = False
        spew = False
        sendfile = True
        protocol = "http"
        http_protocols = "h1"
        logger_class = "gunicorn.glogging.Logger"
        forwarder_headers = "SCRIPT_NAME,PATH_INFO"
        dirty_workers = 0
    """)
    assert load_config(["app:app"], environ={}).notes == []


def test_aliases_set_the_clusterserve_setting(cwd):
    write_conf(cwd / "gunicorn.conf.py", """\
        asgi_loop = "asyncio"
        asgi_lifespan = "off"
        http_parser = "python"
    """)
    cfg = load_config(["app:app"], environ={})
    assert (cfg.loop, cfg.lifespan, cfg.http) == ("asyncio", "off", "h11")
    cfg = load_config(["app:app", "--http-parser", "fast", "--asgi-loop", "uvloop"], environ={})
    assert (cfg.http, cfg.loop) == ("httptools", "uvloop")


def test_hidden_gunicorn_flags_do_not_crowd_help():
    text = build_parser().format_help()
    assert "--spew" not in text and "--worker-tmp-dir" not in text
    assert "docs/migrating.md" in text


def test_gunicorns_server_hooks_are_hooks_here():
    hooks = [name for name, theirs in THEIRS.items() if theirs.section == "Server Hooks"]
    assert len(hooks) == 16
    for name in hooks:
        assert BY_NAME[name].kind == HOOK, name
