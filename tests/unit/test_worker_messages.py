"""What the arbiter accepts from a worker: every kind, and what is refused."""

import socket

import pytest

from clusterserve.channel import MALFORMED, Message
from clusterserve.worker_messages import problem

STATS = {"classes": [0, 1, 0, 0, 0], "buckets": [0] * 14, "sum": 0.5}
GOOD = [
    Message("ready", {"interface": "wsgi"}),
    Message("boot_error", {"error": "ImportError: no module named app"}),
    Message("heartbeat", {"requests": 3, "accepted": 2, "open": 1, "in_flight": 0, "stats": None}),
    Message("heartbeat", {"requests": 3, "accepted": 2, "open": 1, "in_flight": 0, "stats": STATS}),
    Message("retire", {"reason": "max_requests", "detail": "served 1000 requests"}),
    Message("abort", {"reason": "stuck_request", "detail": "a request has run for more than 30s"}),
    Message("report", {"taken": [1, 2], "closed": 3, "free": True}),
    Message("report", {}),
    Message("decline", {"id": 7}),
    Message("handback", {"family": int(socket.AF_INET), "peer": ["127.0.0.1", 5000]}, fds=[9]),
    Message("handback", {"family": int(socket.AF_UNIX), "peer": None}, fds=[9]),
]


@pytest.mark.parametrize("message", GOOD, ids=lambda m: m.kind)
def test_what_workers_send_is_accepted(message):
    assert problem(message, round_robin=True) is None


BAD = [
    (Message(MALFORMED, {"error": "not a JSON object with a kind: b'x'"}), "not a JSON object"),
    (Message("frobnicate", {}), "unknown kind 'frobnicate'"),
    (Message("ready", {"interface": "cgi"}), "'ready' field 'interface' is 'cgi'"),
    (Message("ready", {}), "'ready' lacks interface"),
    (Message("ready", {"interface": "wsgi", "extra": 1}), "'ready' has an unknown field 'extra'"),
    (Message("ready", {"interface": "wsgi"}, fds=[5]), "1 descriptors with a 'ready' message"),
    (Message("heartbeat", {"requests": -1, "accepted": 0, "open": 0, "in_flight": 0, "stats": None}),
     "'heartbeat' field 'requests' is -1"),
    (Message("heartbeat", {"requests": True, "accepted": 0, "open": 0, "in_flight": 0, "stats": None}),
     "'heartbeat' field 'requests' is True"),
    (Message("heartbeat", {"requests": 10 ** 30, "accepted": 0, "open": 0, "in_flight": 0, "stats": None}),
     "'heartbeat' field 'requests' is 1000000000000000000000000000000"),
    (Message("heartbeat", {"requests": 0, "accepted": 0, "open": 0, "in_flight": 0,
                           "stats": {**STATS, "sum": float("nan")}}), "'heartbeat' field 'stats'"),
    (Message("retire", {"reason": "crash", "detail": ""}), "'retire' field 'reason' is 'crash'"),
    (Message("report", {"taken": [0]}), "'report' field 'taken' is [0]"),
    (Message("report", {"free": 1}), "'report' field 'free' is 1"),
    (Message("decline", {"id": "7"}), "'decline' field 'id' is '7'"),
    (Message("handback", {"family": 99, "peer": None}, fds=[9]), "'handback' field 'family' is 99"),
    (Message("handback", {"family": int(socket.AF_INET), "peer": ["h", "p"]}, fds=[9]),
     "'handback' field 'peer'"),
    (Message("handback", {"family": int(socket.AF_INET), "peer": None}), "0 descriptors"),
]


@pytest.mark.parametrize(("message", "said"), BAD, ids=lambda value: str(value)[:30])
def test_what_is_wrong_is_named(message, said):
    assert said in problem(message, round_robin=True)


def test_dispatch_messages_are_unknown_outside_round_robin():
    assert problem(Message("decline", {"id": 7}), round_robin=False) == "unknown kind 'decline'"
