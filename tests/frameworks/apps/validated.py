"""Any WSGI app of the matrix, wrapped in ``wsgiref.validate.validator``.

Served as ``tests.frameworks.apps.validated:validated('package.module:app')``
(or ``'package.module:create_app()'`` for a factory). Every WSGIWarning is
written to stderr each time, so a test reads them all from the server's log.

The validator wraps the app's iterable in its own, so the server never sees
the ``wsgi.file_wrapper`` object a framework returns (Django's ``FileResponse``,
Flask's ``send_file``, Falcon's ``resp.stream``, Bottle's ``static_file``) and
iterates it instead of using ``sendfile``: this run checks that fallback, the
runs without the validator check the file wrapper's own path.

The validator checks both sides of PEP 3333. Where a framework breaks a rule
of the app's side, the app is excused by name: a shim between the validator
and the app makes the app's call one the validator accepts, so every check
of the server's side still runs. The excuses:

- ``read-without-size``: ``wsgi.input.read()`` with no size. PEP 3333 lists
  ``read(size)`` only, and the validator asserts one argument; a server that
  sets ``wsgi.input_terminated`` (gunicorn, clusterserve) promises that
  reading to the end is safe, and Werkzeug (Flask) then reads a form body
  with ``read()``. The shim reads in sized pieces to the end instead.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import WSGIWarning, validator

READ_PIECE = 64 * 1024


class SizedReads:
    """``wsgi.input`` as the validator wraps it, with ``read()`` done as ``read(size)`` to the end."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self.stream.read(size)
        pieces = []
        while piece := self.stream.read(READ_PIECE):
            pieces.append(piece)
        return b"".join(pieces)

    def readline(self, *args: int) -> bytes:
        return self.stream.readline(*args)

    def readlines(self, *args: int) -> list[bytes]:
        return self.stream.readlines(*args)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.stream)


def read_without_size(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def excused(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"] = SizedReads(environ["wsgi.input"])
        return app(environ, start_response)
    return excused


EXCUSES = {"read-without-size": read_without_size}


def validated(target: str, *excused: str):
    module_name, _, attribute = target.partition(":")
    is_factory = attribute.endswith("()")
    app = getattr(importlib.import_module(module_name), attribute.removesuffix("()"))
    if is_factory:
        app = app()
    for name in excused:
        app = EXCUSES[name](app)
    warnings.simplefilter("always", WSGIWarning)
    return validator(app)
