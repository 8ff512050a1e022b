"""What the arbiter accepts from a worker: every kind, and what is refused."""

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
]


@pytest.mark.parametrize("message", GOOD, ids=lambda m: m.kind)
def test_what_workers_send_is_accepted(message):
    assert problem(message, round_robin=True) is None


BAD = [
    (Message(MALFORMED, {"error": "'heartbeat' without a JSON object: b'x'"}), "without a JSON object"),
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
    # Kinds the arbiter sends, and round-robin's packed kinds (tests/unit/test_dispatch_wire.py) as JSON.
    (Message("may_hand_back", {}), "unknown kind 'may_hand_back'"),
    (Message("report", {"taken": [1]}), "unknown kind 'report'"),
]


@pytest.mark.parametrize(("message", "said"), BAD, ids=lambda value: str(value)[:30])
def test_what_is_wrong_is_named(message, said):
    assert said in problem(message, round_robin=True)

