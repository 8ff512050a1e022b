"""Every uvicorn name the ASGI worker uses exists in the installed uvicorn.

``clusterserve/workers/uvicorn_internals.py`` lists them (``USES``).  Modules,
classes and methods are looked up directly; attributes that only instances
have are looked up on real ones: a loaded ``Config``, the lifespans, and a
protocol of each kind attached to a real socket that has served a request.
CI runs this on the oldest supported uvicorn and on the newest.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import socket
import sys
from pathlib import Path

import pytest
import uvicorn

from clusterserve.http.connection import HeadLimits
from clusterserve.workers import uvicorn_internals as internals

ROOT = Path(__file__).resolve().parent.parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


async def hello(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"hi"})


def uses_of(name: str) -> list[internals.Use]:
    return [use for use in internals.USES if use.name == name]


def available(use: internals.Use) -> bool:
    return not use.needs or importlib.util.find_spec(use.needs) is not None


@pytest.mark.parametrize("use", internals.USES, ids=lambda use: f"{use.module}.{use.name}")
def test_every_module_class_and_method(use):
    if not available(use):
        pytest.skip(f"{use.needs} is not installed")
    found = getattr(importlib.import_module(use.module), use.name)
    for member in use.members:
        assert hasattr(found, member), f"uvicorn {uvicorn.__version__}: {use.name}.{member}"


def assert_attributes(instance: object, name: str) -> None:
    for use in uses_of(name):
        if use.module == type(instance).__module__ or isinstance(instance, getattr(
                importlib.import_module(use.module), use.name)):
            missing = [attribute for attribute in use.attributes if not hasattr(instance, attribute)]
            assert not missing, f"uvicorn {uvicorn.__version__}: {name} has no {missing}"
            return
    raise AssertionError(f"{name} from {type(instance).__module__} is not listed")


def test_config_server_state_and_lifespans():
    config = uvicorn.Config(hello, log_config=None)
    internals.load(config)
    assert_attributes(config, "Config")
    assert_attributes(internals.new_server_state(), "ServerState")
    for lifespan in ("on", "off"):
        loaded = internals.load(uvicorn.Config(hello, lifespan=lifespan, log_config=None))
        assert_attributes(loaded.lifespan, "LifespanOn" if lifespan == "on" else "LifespanOff")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_protocol_and_cycle_attributes_on_a_served_request(http):
    """A real protocol on a real socket pair, after it has answered one request."""
    if http == "httptools" and internals.HttpToolsProtocol is None:
        pytest.skip("httptools is not installed")
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        config = uvicorn.Config(hello, http=http, log_config=None)
        rules = internals.ConnectionRules(HeadLimits(4094, 100, 8190), header_timeout=5.0, io_timeout=5.0,
                                          drop_underscores=True)
        loaded = internals.load(config)
        protocol_class = internals.protocol_factory(loaded.http_protocol)
        state = internals.new_server_state()
        theirs.sendall(REQUEST)

        async def serve() -> internals.Guarded:
            protocol = protocol_class(config=config, server_state=state, app_state={}, rules=rules, app=hello)
            await loop.connect_accepted_socket(lambda: protocol, ours)
            while internals.served(state) < 1:
                await asyncio.sleep(0.01)
            return protocol

        protocol = loop.run_until_complete(asyncio.wait_for(serve(), 5))
        name = "H11Protocol" if http == "h11" else "HttpToolsProtocol"
        assert_attributes(protocol, name)
        assert_attributes(protocol.cycle, "RequestResponseCycle")
        assert_attributes(protocol.flow, "FlowControl")
        assert theirs.recv(4096).startswith(b"HTTP/1.1 200 ")
        protocol.transport.close()
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        theirs.close()
        loop.close()


def test_a_missing_name_is_named_with_the_uvicorn_release():
    gone = internals.Use("uvicorn.server", "ServerState", members=("a_method_uvicorn_never_had",))
    assert internals.find_missing((gone,)) == "uvicorn.server.ServerState.a_method_uvicorn_never_had"
    assert internals.find_missing((internals.Use("uvicorn.no_such_module", "X"),)) == "uvicorn.no_such_module"
    assert internals.find_missing(internals.USES) is None


def test_the_import_check_fails_with_one_line_naming_release_and_name(tmp_path, monkeypatch):
    """uvicorn without a name the worker uses: importing the module fails, saying so."""
    module = importlib.import_module("uvicorn.protocols.http.h11_impl")
    monkeypatch.delattr(module.H11Protocol, "handle_events")
    monkeypatch.delitem(sys.modules, "clusterserve.workers.uvicorn_internals")
    with pytest.raises(ImportError) as failure:
        importlib.import_module("clusterserve.workers.uvicorn_internals")
    message = str(failure.value)
    assert message == (f"the ASGI worker needs uvicorn's uvicorn.protocols.http.h11_impl.H11Protocol."
                       f"handle_events, which uvicorn {uvicorn.__version__} does not have; install a "
                       f"release it supports (uvicorn>={internals.OLDEST_SUPPORTED})")


def test_pyproject_lower_bound_is_the_oldest_supported_release_and_there_is_no_upper_pin():
    pyproject = (ROOT / "pyproject.toml").read_text()
    (requirement,) = re.findall(r'"(uvicorn[^"]*)"', pyproject)
    assert requirement == f"uvicorn>={internals.OLDEST_SUPPORTED}"


def test_a_ws_implementation_the_release_lacks_is_named():
    assert internals.unknown_ws("auto") is None
    assert internals.unknown_ws("carrier-pigeon") == (
        f"setting 'ws': uvicorn {uvicorn.__version__} has no 'carrier-pigeon' WebSocket implementation")


def test_protocol_modules_are_what_config_load_imports():
    import importlib

    modules = internals.protocol_modules("auto", "auto")
    assert modules == ["uvicorn.protocols.http.auto", "uvicorn.protocols.websockets.auto"]
    assert all(importlib.import_module(module) for module in modules)
    assert internals.protocol_modules("h11", "none") == ["uvicorn.protocols.http.h11_impl"]
    assert internals.protocol_modules("h11", "no-such") == ["uvicorn.protocols.http.h11_impl"]
