"""Importing the app and telling WSGI from ASGI.

``module:attr``, ``module:factory(args)`` with literal arguments, or a bare
``module`` (which looks for ``application``, then ``app``).  Only workers
call this, unless ``preload_app`` is set, so the arbiter stays free of app
code and every fork starts clean.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_NAMES = ("application", "app")


class AppLoadError(Exception):
    """The app could not be loaded; the message says why and names the app."""


class InterfaceMismatch(AppLoadError):
    """The settings serve the app as one interface, and its signature says it is the other."""


@dataclass(frozen=True)
class AppSpec:
    module: str
    attribute: str | None
    call_args: tuple[Any, ...] | None = None
    call_kwargs: dict[str, Any] | None = None


def parse_app_spec(text: str) -> AppSpec:
    """Parse ``module[:attr[(literal args)]]`` without importing anything."""
    module, _, expression = text.strip().partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AppLoadError(f"{text!r} is not MODULE:ATTR (bad module name {module!r})")
    if not expression:
        return AppSpec(module, None)
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"{text!r}: {expression!r} is not a name or a call") from None
    if isinstance(node, ast.Name):
        return AppSpec(module, node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        keywords = [(k.arg, k.value) for k in node.keywords if k.arg is not None]
        if len(keywords) < len(node.keywords):  # a **mapping
            raise AppLoadError(f"{text!r}: factory arguments must be literals")
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {name: ast.literal_eval(value) for name, value in keywords}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise AppLoadError(f"{text!r}: factory arguments must be literals") from None
        return AppSpec(module, node.func.id, args, kwargs)
    raise AppLoadError(f"{text!r}: {expression!r} is not a name or a call")


def prepare_import_path(chdir: str | None, pythonpath: list[str]) -> None:
    """Change directory if asked; put the working directory and pythonpath first on sys.path."""
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as err:
            raise AppLoadError(f"cannot chdir to {chdir!r}: {err.strerror}") from None
    for entry in reversed([os.getcwd(), *pythonpath]):
        path = os.path.abspath(entry)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def load_app(text: str) -> Callable[..., Any]:
    """Import the app named by ``text``; raise ``AppLoadError`` on any failure."""
    spec = parse_app_spec(text)
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as err:
        # Only the app's own module (or a package above it) missing means "no such
        # module"; a module the app imports that is missing is the app's own error.
        if err.name and (spec.module == err.name or spec.module.startswith(err.name + ".")):
            raise AppLoadError(f"cannot import {spec.module!r} for app {text!r}: no such module") from None
        raise
    names = (spec.attribute,) if spec.attribute else DEFAULT_NAMES
    for name in names:
        if hasattr(module, name):
            target: object = getattr(module, name)
            break
    else:
        wanted = " or ".join(repr(n) for n in names)
        raise AppLoadError(f"app {text!r}: module {spec.module!r} has no attribute {wanted}")
    if spec.call_args is not None:
        if not callable(target):
            raise AppLoadError(f"app {text!r}: {name!r} is not callable (got {type(target).__name__})")
        target = target(*spec.call_args, **(spec.call_kwargs or {}))
    if not callable(target):
        raise AppLoadError(f"app {text!r} is not callable (got {type(target).__name__})")
    return target


def detect_interface(app: Callable[..., Any]) -> str:
    """'asgi' for coroutine callables or objects with an async __call__, else 'wsgi'."""
    if inspect.isclass(app):
        return "asgi" if hasattr(app, "__await__") else "wsgi"
    if asyncio.iscoroutinefunction(app):  # functions, methods, and partials of them
        return "asgi"
    # The __call__ that calling the object runs: its class's.
    return "asgi" if asyncio.iscoroutinefunction(type(app).__call__) else "wsgi"


def _call_signature(app: Callable[..., Any]) -> inspect.Signature | None:
    """How the server would call ``app``; None when Python cannot say (builtins, C types)."""
    try:
        return inspect.signature(app)
    except (TypeError, ValueError):
        return None


def evident_interface(app: Callable[..., Any]) -> str | None:
    """'asgi' or 'wsgi' when the callable leaves no doubt, else None.

    ASGI when it is a coroutine function (or has an async ``__call__``); WSGI
    when it is a plain callable that requires exactly two positional arguments
    (``environ, start_response``), which no ASGI app, version 2 or 3, takes.
    Classes, ``*args`` wrappers and anything else are left undecided.
    """
    if not inspect.isclass(app) and detect_interface(app) == "asgi":
        return "asgi"
    signature = None if inspect.isclass(app) else _call_signature(app)
    if signature is None:
        return None
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if any(p.kind is p.VAR_POSITIONAL for p in positional):
        return None
    required = [p for p in positional if p.default is p.empty]
    return "wsgi" if len(required) == 2 and len(positional) == 2 else None


def looks_like_factory(app: Callable[..., Any]) -> bool:
    """The callable can be called with no arguments at all, as an app factory is.

    Decided by the signature only: calling a factory can have side effects.
    """
    signature = _call_signature(app)
    if signature is None:
        return False
    return all(p.kind is not p.VAR_POSITIONAL and (p.default is not p.empty or p.kind is p.VAR_KEYWORD)
               for p in signature.parameters.values())


def factory_warning(cfg: Any, app: Callable[..., Any]) -> str | None:
    """The warning for an app that looks like a factory given without ``--factory``."""
    if cfg.factory or not looks_like_factory(app):
        return None
    return (f"app {cfg.wsgi_app!r} takes no arguments, as an app factory does; it is served "
            "as it is, so every request will fail: give --factory (setting 'factory') to "
            "call it once and serve what it returns")


def prepare_environment(cfg: Any) -> None:
    """What the arbiter does once before any app import: environment, directory, sys.path.

    ``raw_env`` and ``env_file`` go into ``os.environ`` (inherited by workers),
    ``chdir`` is applied, and the working directory and ``pythonpath`` go first
    on ``sys.path``.
    """
    os.environ.update(environment_of(cfg))
    prepare_import_path(cfg.chdir, cfg.pythonpath)


def environment_of(cfg: Any) -> dict[str, str]:
    """The variables ``env_file`` and ``raw_env`` set (``raw_env`` wins)."""
    values: dict[str, str] = {}
    if cfg.env_file:
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(cfg.env_file).items() if v is not None})
    for assignment in cfg.raw_env:
        key, _, value = assignment.partition("=")
        values[key] = value
    return values


def load_configured_app(cfg: Any) -> Callable[..., Any]:
    """Import the app the settings name (calling it first if ``factory`` is set)."""
    prepare_import_path(None, cfg.pythonpath)
    app = load_app(cfg.wsgi_app)
    if cfg.factory:
        try:
            app = app()
        except TypeError as err:
            raise AppLoadError(f"app {cfg.wsgi_app!r} is not a factory (--factory): {err}") from None
    return app
