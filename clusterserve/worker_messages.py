"""What the arbiter accepts from a worker over its channel, field by field.

A worker runs app code, and app code can scribble on any descriptor of its
process, its channel included.  So the arbiter checks every message before
it acts on it: its kind (and whether the dispatch mode uses that kind),
every field's presence and type, and how many descriptors came with it.
A message that fails is not acted on, and its worker is replaced.  The
packed messages of ``round-robin`` dispatch (``report``, ``handback``) are
checked field by field as they are decoded (``dispatch/wire.py``); here
only whether the dispatch mode uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterserve.channel import ABORT, BOOT_ERROR, HEARTBEAT, MALFORMED, READY, RETIRE, Message, Received
from clusterserve.control.request_stats import DURATION_BUCKETS, STATUS_CLASSES
from clusterserve.dispatch.wire import Handback, Report
from clusterserve.worker_exits import ExitReason

Check = Callable[[Any], bool]

MAX_COUNT = 2**63 - 1
MAX_TEXT = 65536


def count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def one_of(*allowed: Any) -> Check:
    return lambda value: not isinstance(value, bool) and value in allowed


def counts(length: int) -> Check:
    return lambda value: isinstance(value, list) and len(value) == length and all(map(count, value))


def request_stats(value: Any) -> bool:
    """None, or the totals of ``RequestStats.to_message``."""
    return value is None or (
        isinstance(value, dict) and set(value) == {"classes", "buckets", "sum"}
        and counts(len(STATUS_CLASSES))(value["classes"])
        and counts(len(DURATION_BUCKETS) + 1)(value["buckets"])
        and isinstance(value["sum"], (int, float)) and not isinstance(value["sum"], bool)
        and 0 <= value["sum"] < float("inf"))


# The JSON kinds a worker sends, each with its fields (all required; none comes with descriptors).
KINDS: dict[str, dict[str, Check]] = {
    READY: {"interface": one_of("wsgi", "asgi")},
    BOOT_ERROR: {"error": text},
    HEARTBEAT: {"requests": count, "accepted": count, "open": count, "in_flight": count, "stats": request_stats},
    RETIRE: {"reason": one_of(ExitReason.STUCK_REQUEST.value, ExitReason.MAX_REQUESTS.value), "detail": text},
    ABORT: {"reason": one_of(ExitReason.STUCK_REQUEST.value), "detail": text},
}


def problem(message: Received, round_robin: bool) -> str | None:
    """What is wrong with a message from a worker, or None if the arbiter may act on it."""
    if isinstance(message, (Report, Handback)) and round_robin:
        return None
    if not isinstance(message, Message):
        return f"unknown kind {message.kind!r}"
    if message.kind == MALFORMED:
        return str(message.fields.get("error", "not a message"))
    checks = KINDS.get(message.kind)
    if checks is None:
        return f"unknown kind {_show(message.kind)}"
    if message.fds:
        return f"{len(message.fds)} descriptors with a {message.kind!r} message"
    for name, value in message.fields.items():
        check = checks.get(name)
        if check is None:
            return f"{message.kind!r} has an unknown field {_show(name)}"
        if not check(value):
            return f"{message.kind!r} field {name!r} is {_show(value)}"
    missing = [name for name in checks if name not in message.fields]
    if missing:
        return f"{message.kind!r} lacks {', '.join(missing)}"
    return None


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
