"""What the arbiter accepts from a worker over its channel, field by field.

A worker runs app code, and app code can scribble on any descriptor of its
process, its channel included.  So the arbiter checks every message before
it acts on it: its kind (and whether the dispatch mode uses that kind),
every field's presence and type, and how many descriptors came with it.
A message that fails is not acted on, and its worker is replaced.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterserve.channel import (
    ABORT,
    BOOT_ERROR,
    DECLINE,
    HANDBACK,
    HEARTBEAT,
    MALFORMED,
    READY,
    REPORT,
    RETIRE,
    Message,
)
from clusterserve.control.request_stats import DURATION_BUCKETS, STATUS_CLASSES
from clusterserve.worker_exits import ExitReason

Check = Callable[[Any], bool]

MAX_COUNT = 2**63 - 1
MAX_TEXT = 65536


def count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def positive(value: Any) -> bool:
    return count(value) and value > 0


def text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def flag(value: Any) -> bool:
    return isinstance(value, bool)


def one_of(*allowed: Any) -> Check:
    return lambda value: not isinstance(value, bool) and value in allowed


def counts(length: int) -> Check:
    return lambda value: isinstance(value, list) and len(value) == length and all(map(count, value))


def ids(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 4096 and all(map(positive, value))


def request_stats(value: Any) -> bool:
    """None, or the totals of ``RequestStats.to_message``."""
    return value is None or (
        isinstance(value, dict) and set(value) == {"classes", "buckets", "sum"}
        and counts(len(STATUS_CLASSES))(value["classes"])
        and counts(len(DURATION_BUCKETS) + 1)(value["buckets"])
        and isinstance(value["sum"], (int, float)) and not isinstance(value["sum"], bool)
        and 0 <= value["sum"] < float("inf"))


def peer(value: Any) -> bool:
    """None, or a TCP address as JSON carries it: [host, port] or [host, port, flowinfo, scope]."""
    return value is None or (
        isinstance(value, list) and len(value) in (2, 4) and text(value[0])
        and all(count(part) for part in value[1:]))


@dataclass(frozen=True)
class Kind:
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    descriptors: int = 0
    round_robin_only: bool = False


KINDS = {
    READY: Kind({"interface": one_of("wsgi", "asgi")}),
    BOOT_ERROR: Kind({"error": text}),
    HEARTBEAT: Kind({"requests": count, "accepted": count, "open": count, "in_flight": count,
                     "stats": request_stats}),
    RETIRE: Kind({"reason": one_of(ExitReason.STUCK_REQUEST.value, ExitReason.MAX_REQUESTS.value),
                  "detail": text}),
    ABORT: Kind({"reason": one_of(ExitReason.STUCK_REQUEST.value), "detail": text}),
    REPORT: Kind(optional={"taken": ids, "closed": count, "free": flag}, round_robin_only=True),
    DECLINE: Kind({"id": positive}, round_robin_only=True),
    HANDBACK: Kind({"family": one_of(int(socket.AF_INET), int(socket.AF_INET6), int(socket.AF_UNIX)),
                    "peer": peer}, descriptors=1, round_robin_only=True),
}


def problem(message: Message, round_robin: bool) -> str | None:
    """What is wrong with a message from a worker, or None if the arbiter may act on it."""
    if message.kind == MALFORMED:
        return str(message.fields.get("error", "not a message"))
    kind = KINDS.get(message.kind)
    if kind is None or (kind.round_robin_only and not round_robin):
        return f"unknown kind {_show(message.kind)}"
    if len(message.fds) != kind.descriptors:
        return f"{len(message.fds)} descriptors with a {message.kind!r} message"
    for name, value in message.fields.items():
        check = kind.required.get(name) or kind.optional.get(name)
        if check is None:
            return f"{message.kind!r} has an unknown field {_show(name)}"
        if not check(value):
            return f"{message.kind!r} field {name!r} is {_show(value)}"
    missing = [name for name in kind.required if name not in message.fields]
    if missing:
        return f"{message.kind!r} lacks {', '.join(missing)}"
    return None


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
