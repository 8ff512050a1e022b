"""Loading the app: MODULE:ATTR, MODULE:FACTORY(ARGS), MODULE alone; paths; WSGI or ASGI."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import textwrap
import uuid

import pytest

from clusterserve.app import (
    AppLoadError,
    AppSpec,
    InterfaceMismatch,
    detect_interface,
    evident_interface,
    load_app,
    looks_like_factory,
    parse_app_spec,
    prepare_import_path,
)
from clusterserve.config import load_config
from clusterserve.workers.base import resolve_interface
from tests.apps import basic


def call_wsgi(app):
    """Call a WSGI app in-process; return (status, body)."""
    seen = []
    body = b"".join(app({"PATH_INFO": "/", "QUERY_STRING": ""},
                        lambda status, headers, exc_info=None: seen.append(status)))
    return seen[0], body


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A scratch directory; sys.path, sys.modules and the working directory are restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("cs_"):
            del sys.modules[name]


def module_file(directory, body, prefix="cs_app"):
    """Write a module with a unique name into ``directory``; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    importlib.invalidate_caches()
    return name


# -- parsing the spec -----------------------------------------------------------------


@pytest.mark.parametrize("text,spec", [
    ("mod", AppSpec("mod", None)),
    ("pkg.sub.mod", AppSpec("pkg.sub.mod", None)),
    ("mod:app", AppSpec("mod", "app")),
    (" mod:app ", AppSpec("mod", "app")),
    ("mod:create()", AppSpec("mod", "create", (), {})),
    ("mod:create('a', 2, x=[1, 2], y={'k': None}, z=-1.5)",
     AppSpec("mod", "create", ("a", 2), {"x": [1, 2], "y": {"k": None}, "z": -1.5})),
    ("mod:create(b'raw', (1, 2), True)", AppSpec("mod", "create", (b"raw", (1, 2), True), {})),
])
def test_parse_app_spec(text, spec):
    assert parse_app_spec(text) == spec


@pytest.mark.parametrize("text", [
    "", ":app", "1mod:app", "my-mod:app", "a b:app", "mod.:app",
    "mod:app:more", "mod:app.attr", "mod:lambda: 0", "mod:app[0]", "mod:'app'",
    "mod:create(x)", "mod:create(os.sep)", "mod:create(*args)", "mod:create(**kwargs)",
    "mod:create(f())", "mod:create(1 if True else 2)", "mod:create({[]: 1})",
    "mod:create(key=value)", "mod:obj.create()",
])
def test_bad_app_specs_are_rejected_before_importing(text):
    with pytest.raises(AppLoadError):
        parse_app_spec(text)


def test_non_literal_arguments_are_named_as_such():
    with pytest.raises(AppLoadError, match="must be literals"):
        parse_app_spec("tests.apps.basic:create_app(__import__('os').getcwd())")
    with pytest.raises(AppLoadError, match="must be literals"):
        parse_app_spec("tests.apps.basic:create_app(**{'greeting': 'x'})")


# -- loading ---------------------------------------------------------------------------


def test_module_and_attribute():
    assert load_app("tests.apps.basic:slow") is basic.slow
    assert load_app("tests.apps.basic:app") is basic.app


def test_factory_with_literal_args_and_kwargs():
    app = load_app("tests.apps.basic:create_app('hey', punctuation='?')")
    assert call_wsgi(app) == ("200 OK", b"hey?")
    assert call_wsgi(load_app("tests.apps.basic:create_app()")) == ("200 OK", b"hi!")
    assert call_wsgi(load_app("tests.apps.basic:create_app(punctuation='.')")) == ("200 OK", b"hi.")


def test_factory_called_with_wrong_arguments_raises_its_error():
    with pytest.raises(TypeError):
        load_app("tests.apps.basic:create_app(1, 2, 3)")


def test_module_alone_prefers_application_then_app(isolated):
    assert load_app("tests.apps.basic") is basic.application
    only_app = module_file(isolated, "def app(environ, start_response):\n    return []\n")
    assert load_app(only_app).__name__ == "app"
    both = module_file(isolated, """
        def app(environ, start_response):
            return []

        def application(environ, start_response):
            return []
    """)
    assert load_app(both).__name__ == "application"


def test_module_alone_without_either_name(isolated):
    name = module_file(isolated, "def web(environ, start_response):\n    return []\n")
    with pytest.raises(AppLoadError, match="'application' or 'app'") as info:
        load_app(name)
    assert name in str(info.value)


def test_missing_attribute_names_the_app():
    with pytest.raises(AppLoadError) as info:
        load_app("tests.apps.basic:nope")
    assert "tests.apps.basic:nope" in str(info.value) and "'nope'" in str(info.value)


@pytest.mark.parametrize("text", ["no_such_module_clusterserve:app", "tests.apps.no_such_module:app",
                                  "no_such_package_clusterserve.sub:app"])
def test_missing_module_names_the_app(text):
    with pytest.raises(AppLoadError, match="no such module") as info:
        load_app(text)
    assert text in str(info.value)


def test_missing_import_inside_the_app_is_the_apps_own_error(isolated):
    # The app module's name starts with the missing module's name: the error must
    # still be the missing dependency, not "no such module" for the app.
    dependency = f"cs_dep_{uuid.uuid4().hex[:8]}"
    app_module = module_file(isolated, f"import {dependency}\napp = None\n", prefix=dependency)
    assert app_module.startswith(dependency)
    with pytest.raises(ModuleNotFoundError) as info:
        load_app(f"{app_module}:app")
    assert info.value.name == dependency


def test_module_that_raises_on_import():
    sys.modules.pop("tests.apps.broken_import", None)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        load_app("tests.apps.broken_import:app")
    sys.modules.pop("tests.apps.broken_import", None)


def test_target_that_is_not_callable(isolated):
    name = module_file(isolated, """
        app = "a string"

        def factory():
            return 42
    """)
    with pytest.raises(AppLoadError, match="not callable") as info:
        load_app(f"{name}:app")
    assert f"{name}:app" in str(info.value)
    with pytest.raises(AppLoadError, match=r"not callable \(got int\)"):
        load_app(f"{name}:factory()")
    with pytest.raises(AppLoadError, match=r"'app' is not callable \(got str\)"):
        load_app(f"{name}:app()")  # called as a factory


# -- import paths ----------------------------------------------------------------------


def test_working_directory_goes_first_on_sys_path(isolated):
    name = module_file(isolated, "def app(environ, start_response):\n    return []\n")
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    with pytest.raises(AppLoadError, match="no such module"):
        load_app(f"{name}:app")
    prepare_import_path(None, [])
    assert sys.path[0] == str(isolated)
    assert callable(load_app(f"{name}:app"))


def test_chdir_makes_a_module_importable(isolated):
    project = isolated / "project"
    name = module_file(project, "def app(environ, start_response):\n    return []\n")
    with pytest.raises(AppLoadError, match="no such module"):
        load_app(f"{name}:app")
    prepare_import_path(str(project), [])
    assert os.getcwd() == str(project)
    assert callable(load_app(f"{name}:app"))


def test_pythonpath_makes_a_module_importable(isolated):
    lib_a, lib_b = isolated / "lib_a", isolated / "lib_b"
    first = module_file(lib_a, "def app(environ, start_response):\n    return []\n")
    second = module_file(lib_b, "def app(environ, start_response):\n    return []\n")
    for name in (first, second):
        with pytest.raises(AppLoadError):
            load_app(f"{name}:app")
    cfg = load_config(["--pythonpath", "lib_a,lib_b", f"{first}:app"], environ={})
    prepare_import_path(cfg.chdir, cfg.pythonpath)
    assert sys.path[:3] == [str(isolated), str(lib_a), str(lib_b)]
    assert callable(load_app(f"{first}:app"))
    assert callable(load_app(f"{second}:app"))


def test_relative_pythonpath_is_relative_to_chdir(isolated):
    project = isolated / "project"
    name = module_file(project / "src", "def app(environ, start_response):\n    return []\n")
    cfg = load_config(["--chdir", "project", "--pythonpath", "src", f"{name}:app"], environ={})
    assert cfg.chdir == str(project)
    prepare_import_path(cfg.chdir, cfg.pythonpath)
    assert str(project / "src") in sys.path
    assert callable(load_app(f"{name}:app"))


def test_chdir_to_a_missing_directory(isolated):
    with pytest.raises(AppLoadError, match="cannot chdir"):
        prepare_import_path(str(isolated / "missing"), [])


# -- interface detection ---------------------------------------------------------------


def wsgi_function(environ, start_response):
    return []


async def asgi_function(scope, receive, send):
    pass


class WsgiObject:
    def __call__(self, environ, start_response):
        return []


class AsgiObject:
    async def __call__(self, scope, receive, send):
        pass


class WsgiClass:
    """PEP 3333 allows a class: instantiating it is the call."""

    def __init__(self, environ, start_response):
        self.environ = environ

    def __iter__(self):
        return iter([])


class AsgiAwaitableClass:
    """An ASGI 3 app as a class whose instances are awaitable (as uvicorn detects)."""

    def __init__(self, scope, receive, send):
        self.scope = scope

    def __await__(self):
        yield


class Handlers:
    def wsgi(self, environ, start_response):
        return []

    async def asgi(self, scope, receive, send):
        pass


@pytest.mark.parametrize("app,interface", [
    (wsgi_function, "wsgi"),
    (basic.app, "wsgi"),
    (basic.create_app(), "wsgi"),
    (WsgiObject(), "wsgi"),
    (WsgiClass, "wsgi"),
    (Handlers().wsgi, "wsgi"),
    (functools.partial(wsgi_function), "wsgi"),
    (asgi_function, "asgi"),
    (basic.asgi_app, "asgi"),
    (AsgiObject(), "asgi"),
    (AsgiAwaitableClass, "asgi"),
    (Handlers().asgi, "asgi"),
    (functools.partial(asgi_function), "asgi"),
], ids=lambda v: getattr(v, "__qualname__", type(v).__name__) if not isinstance(v, str) else v)
def test_detect_interface(app, interface):
    assert detect_interface(app) == interface


class Asgi2Class:
    """An ASGI 2 app: called with the scope, its instance is called with receive and send."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def wrapped(*args, **kwargs):
    """What a decorator without functools.wraps leaves: nothing tells the interface."""
    return wsgi_function(*args, **kwargs)


def fastapi_style_factory():
    return asgi_function


def flask_style_factory(config=None, **overrides):
    return wsgi_function


@pytest.mark.parametrize("app,interface", [
    (wsgi_function, "wsgi"),
    (basic.app, "wsgi"),
    (WsgiObject(), "wsgi"),
    (Handlers().wsgi, "wsgi"),
    (functools.partial(wsgi_function), "wsgi"),
    (asgi_function, "asgi"),
    (AsgiObject(), "asgi"),
    (Handlers().asgi, "asgi"),
    (functools.partial(asgi_function), "asgi"),
    (WsgiClass, None),  # classes are left undecided: ASGI 2 apps are classes too
    (AsgiAwaitableClass, None),
    (Asgi2Class, None),
    (wrapped, None),
    (functools.partial(wsgi_function, {}), None),  # one argument left: not WSGI's two
    (fastapi_style_factory, None),
    (print, None),
], ids=lambda v: getattr(v, "__qualname__", type(v).__name__) if not isinstance(v, str) else str(v))
def test_evident_interface_decides_only_when_the_signature_leaves_no_doubt(app, interface):
    assert evident_interface(app) == interface


@pytest.mark.parametrize("app,factory", [
    (fastapi_style_factory, True),
    (flask_style_factory, True),
    (basic.create_app, True),
    (wsgi_function, False),
    (asgi_function, False),
    (wrapped, False),  # *args: it may take anything
    (WsgiClass, False),
    (Asgi2Class, False),
    (WsgiObject(), False),
    (print, False),
], ids=lambda v: getattr(v, "__qualname__", type(v).__name__) if not isinstance(v, bool) else str(v))
def test_a_factory_is_told_by_its_signature_without_calling_it(app, factory):
    assert looks_like_factory(app) is factory


@pytest.mark.parametrize("argv,app,interface", [
    ([], wsgi_function, "wsgi"),
    ([], asgi_function, "asgi"),
    (["--interface", "asgi"], Asgi2Class, "asgi"),
    (["--interface", "asgi"], wrapped, "asgi"),
    (["--interface", "wsgi"], wrapped, "wsgi"),
    (["-k", "uvicorn.workers.UvicornWorker"], Asgi2Class, "asgi"),
    (["-k", "uvicorn.workers.UvicornWorker"], asgi_function, "asgi"),
    (["-k", "gthread"], asgi_function, "asgi"),
])
def test_interface_setting_and_worker_class_override_detection(argv, app, interface):
    cfg = load_config([*argv, "tests.apps.basic:app"], environ={})
    assert resolve_interface(cfg, app) == interface


@pytest.mark.parametrize("argv,app", [
    (["--interface", "asgi"], wsgi_function),
    (["--interface", "wsgi"], asgi_function),
    (["-k", "uvicorn.workers.UvicornWorker"], basic.app),
    (["-k", "uvicorn_worker.UvicornWorker"], WsgiObject()),
])
def test_a_setting_that_contradicts_an_evident_interface_is_refused_naming_interface(argv, app):
    cfg = load_config([*argv, "tests.apps.basic:app"], environ={})
    with pytest.raises(InterfaceMismatch, match=r"setting 'interface'.*--interface"):
        resolve_interface(cfg, app)
