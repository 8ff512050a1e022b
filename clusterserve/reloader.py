"""Development reload (``--reload``): a watcher process sends SIGHUP to the arbiter.

The watcher is a child of the arbiter, so that the arbiter itself stays
single-threaded (watchfiles runs a thread of its own).  It watches the
Python files under the working directory and ``pythonpath``, and the
``reload_extra_files``; on a change it asks the arbiter for a HUP, which
starts a new generation of workers with the new code.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from clusterserve import process, signals
from clusterserve.logs import log

POLL_INTERVAL = 1.0
SKIPPED_DIRECTORIES = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".mypy_cache"}


def resolve_engine(engine: str) -> str:
    """``auto`` means watchfiles when it is installed, else polling."""
    if engine != "auto":
        return engine
    try:
        import watchfiles  # noqa: F401 - whether it is installed
    except ImportError:
        return "poll"
    return "watchfiles"


def start_watcher(arbiter_pid: int, roots: list[str], extra_files: list[str], engine: str,
                  forget_arbiter: Callable[[], None]) -> int:
    """Fork the watcher; return its pid."""
    pid = signals.fork_with_signals_held()
    if pid != 0:
        return pid
    try:
        forget_arbiter()
        signals.reset_to_defaults()
        signals.release()
        process.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() == arbiter_pid:
            process.set_title("clusterserve: reloader")
            watch = _watch_with_watchfiles if engine == "watchfiles" else _watch_by_polling
            for changed in watch(roots, extra_files):
                log.info("reload: %s changed; reloading the workers", changed)
                os.kill(arbiter_pid, signal.SIGHUP)
    finally:
        os._exit(0)


def _python_files(roots: list[str]) -> Iterator[Path]:
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [d for d in subdirectories if d not in SKIPPED_DIRECTORIES]
            for name in files:
                if name.endswith(".py"):
                    yield Path(directory, name)


def _snapshot(roots: list[str], extra_files: list[str]) -> dict[Path, float]:
    seen = {}
    for path in [*_python_files(roots), *map(Path, extra_files)]:
        try:
            seen[path] = path.stat().st_mtime
        except OSError:
            continue
    return seen


def _watch_by_polling(roots: list[str], extra_files: list[str]) -> Iterator[str]:
    before = _snapshot(roots, extra_files)
    while True:
        time.sleep(POLL_INTERVAL)
        now = _snapshot(roots, extra_files)
        changed = [str(p) for p in now.keys() | before.keys() if now.get(p) != before.get(p)]
        before = now
        if changed:
            yield ", ".join(sorted(changed)[:3])


def _watch_with_watchfiles(roots: list[str], extra_files: list[str]) -> Iterator[str]:
    from watchfiles import Change, PythonFilter, watch

    extra = {str(Path(f).resolve()) for f in extra_files}
    python = PythonFilter()

    def wanted(change: Change, path: str) -> bool:
        return path in extra or python(change, path)

    for changes in watch(*roots, *extra, watch_filter=wanted):
        yield ", ".join(sorted(path for _, path in changes)[:3])
