"""Counts of finished requests, kept by each worker and summed by the arbiter.

A worker records every finished request (status and duration) and sends
its running totals with each heartbeat; the arbiter keeps the latest
totals of every live worker and adds those of workers that exited, so the
totals it reports only grow.  No shared memory and no temporary files.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

# Upper bounds of the request duration histogram, in seconds (Prometheus's ``le``).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RequestSink(Protocol):
    """Something told of each request as it finishes (the statsd client)."""

    def request(self, status: int, seconds: float) -> None: ...


class RequestStats:
    """Requests by status class and a duration histogram; safe to record from app threads."""

    def __init__(self, sink: RequestSink | None = None) -> None:
        self.by_class = [0] * len(STATUS_CLASSES)
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.duration_sum = 0.0
        self._lock = threading.Lock()
        self._sink = sink

    def record(self, status: int, seconds: float) -> None:
        status_class = min(max(status // 100, 1), len(STATUS_CLASSES)) - 1
        bucket = bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self.by_class[status_class] += 1
            self.buckets[bucket] += 1
            self.duration_sum += seconds
        if self._sink is not None:
            self._sink.request(status, seconds)

    def cumulative_buckets(self) -> list[int]:
        """Counts of requests at most as long as each bound, then the total (``+Inf``)."""
        total, counts = 0, []
        for count in self.buckets:
            total += count
            counts.append(total)
        return counts

    def add(self, other: RequestStats) -> None:
        self.by_class = [a + b for a, b in zip(self.by_class, other.by_class, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.duration_sum += other.duration_sum

    def to_message(self) -> dict[str, Any]:
        with self._lock:
            return {"classes": list(self.by_class), "buckets": list(self.buckets),
                    "sum": self.duration_sum}

    @classmethod
    def from_message(cls, fields: Any) -> RequestStats:
        """Totals a worker sent; anything malformed counts as nothing."""
        stats = cls()
        if isinstance(fields, dict):
            stats.by_class = _counts(fields.get("classes"), len(STATUS_CLASSES))
            stats.buckets = _counts(fields.get("buckets"), len(DURATION_BUCKETS) + 1)
            value = fields.get("sum")
            stats.duration_sum = float(value) if isinstance(value, (int, float)) else 0.0
        return stats


def _counts(values: Any, length: int) -> list[int]:
    if isinstance(values, Sequence) and len(values) == length and all(
            isinstance(v, int) and v >= 0 for v in values):
        return list(values)
    return [0] * length
