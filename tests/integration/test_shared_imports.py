"""A worker imports only the app: everything else it runs was imported by the arbiter
before it forked, so its pages are shared between the workers instead of copied into each
(a module a worker imports itself costs it about a megabyte of private memory)."""

import json

import pytest

HOOKS = '''
import json, os, sys

_at_fork = {}


def post_fork(server, worker):
    _at_fork[os.getpid()] = set(sys.modules)


def worker_exit(server, worker):
    with open(os.environ["IMPORTS_LOG"], "a") as log:
        log.write(json.dumps(sorted(set(sys.modules) - _at_fork[os.getpid()])) + "\\n")
'''

SERVERS = {
    "wsgi-h11": ["examples.hello:app", "--http", "h11"],
    "wsgi-httptools": ["examples.hello:app", "--http", "httptools"],
    "asgi": ["examples.hello_asgi:app"],
    "asgi-h11-wsproto": ["examples.hello_asgi:app", "--http", "h11", "--ws", "wsproto"],
}


@pytest.mark.parametrize("kind", list(SERVERS))
def test_a_worker_imports_nothing_but_the_app(start_server, tmp_path, kind):
    (tmp_path / "hooks.py").write_text(HOOKS)
    log = tmp_path / "imports.log"
    server = start_server([*SERVERS[kind], "-w", "1", "-c", str(tmp_path / "hooks.py")], workers=1,
                          env={"IMPORTS_LOG": str(log)})
    for _ in range(3):
        assert server.get("/")[0] == 200
    assert server.stop(timeout=20) == 0
    imported = json.loads(log.read_text().splitlines()[0])
    assert [name for name in imported if name.split(".")[0] != "examples"] == []
