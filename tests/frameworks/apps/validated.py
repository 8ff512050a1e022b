"""Any WSGI app of the matrix, wrapped in ``wsgiref.validate.validator``.

Served as ``tests.frameworks.apps.validated:validated('package.module:app')``
(or ``'package.module:create_app()'`` for a factory). Every WSGIWarning is
written to stderr each time, so a test reads them all from the server's log.
"""

from __future__ import annotations

import importlib
import warnings
from wsgiref.validate import WSGIWarning, validator


def validated(target: str):
    module_name, _, attribute = target.partition(":")
    is_factory = attribute.endswith("()")
    app = getattr(importlib.import_module(module_name), attribute.removesuffix("()"))
    warnings.simplefilter("always", WSGIWarning)
    return validator(app() if is_factory else app)
