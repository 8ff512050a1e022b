"""An app given the wrong way is told apart, by its signature, before it fails every request.

A factory without ``--factory`` gets a warning that names ``--factory``; a
worker class or ``--interface`` that contradicts an app that is evidently
WSGI or ASGI is refused at ``--check-config`` and at start-up with exit 2,
naming ``--interface``; apps whose signature says nothing (ASGI 2) still run.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_boot import run_to_exit

MISMATCH = r"setting 'interface': app '{app}' is a {evident} app, but {source} serves it as {chosen}"


def test_check_config_warns_of_a_factory_given_without_factory():
    code, output, _ = run_to_exit(["tests.apps.factories:create_app", "--check-config"])
    assert code == 0
    assert "takes no arguments, as an app factory does" in output and "--factory" in output


def test_check_config_with_factory_has_no_warning():
    code, output, _ = run_to_exit(["tests.apps.factories:create_app", "--factory", "--check-config"])
    assert code == 0
    assert "app factory" not in output
    assert "served as ASGI" in output


def test_a_factory_without_factory_is_warned_of_in_the_workers_log(start_server):
    server = start_server(["tests.apps.factories:create_app", "-w", "1"], workers=1)
    server.wait_for_log(r"WARNING.*takes no arguments, as an app factory does.*--factory")


def test_a_factory_with_factory_serves_its_app(start_server):
    server = start_server(["tests.apps.factories:create_app", "--factory", "-w", "1"], workers=1)
    response = httpx.get(f"http://{server.host}:{server.port}/", timeout=5)
    assert response.json() == {"served": "by the factory's app"}


@pytest.mark.parametrize(("args", "evident", "source", "chosen"), [
    (["tests.apps.basic:app", "-k", "uvicorn.workers.UvicornWorker"], "WSGI",
     "worker class 'uvicorn.workers.UvicornWorker'", "ASGI"),
    (["tests.apps.basic:app", "--interface", "asgi"], "WSGI", "--interface asgi", "ASGI"),
    (["tests.apps.basic:asgi_app", "--interface", "wsgi"], "ASGI", "--interface wsgi", "WSGI"),
])
@pytest.mark.parametrize("mode", [["--check-config"], ["-w", "2", "-b", "127.0.0.1:0"],
                                  ["--preload", "-b", "127.0.0.1:0"]], ids=["check-config", "start", "preload"])
def test_a_setting_that_contradicts_the_app_exits_2_naming_interface(args, evident, source, chosen, mode):
    code, output, seconds = run_to_exit([*args, *mode])
    assert code == 2, output
    expected = MISMATCH.format(app=args[0], evident=evident, source=source, chosen=chosen)
    assert expected in output
    assert f"give --interface {evident.lower()}" in output
    assert output.count("Booting worker") <= 2
    assert seconds < 10


def test_an_asgi2_app_is_served_when_asked_for(start_server):
    server = start_server(["tests.apps.factories:Asgi2App", "--interface", "asgi", "-w", "1"], workers=1)
    assert httpx.get(f"http://{server.host}:{server.port}/", timeout=5).text == "asgi2"


def test_an_asgi2_app_is_served_by_a_uvicorn_worker_class(start_server):
    server = start_server(["tests.apps.factories:Asgi2App", "-k", "uvicorn.workers.UvicornWorker",
                           "-w", "1"], workers=1)
    assert httpx.get(f"http://{server.host}:{server.port}/", timeout=5).text == "asgi2"
