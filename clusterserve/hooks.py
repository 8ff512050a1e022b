"""Calling server hooks (``on_starting``, ``post_fork``, ...) from config files."""

from __future__ import annotations

from typing import Any

from clusterserve.logs import log


def run_hook(cfg: Any, name: str, *args: Any) -> None:
    """Call the hook ``name`` if the config sets one; a failing hook is logged, never fatal."""
    hook = getattr(cfg, name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:  # noqa: BLE001 - user code must not take the server down
        log.exception("%s hook failed", name)
