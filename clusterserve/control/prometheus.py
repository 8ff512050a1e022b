"""Prometheus metrics, served by the arbiter on ``metrics_bind``.

The numbers come from the workers' heartbeats (see ``request_stats``),
so a scrape costs the workers nothing and never waits on them.  The text
format is written by ``prometheus-client`` (the ``metrics`` extra).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from clusterserve.control.exchange import ExchangeServer
from clusterserve.control.request_stats import DURATION_BUCKETS, STATUS_CLASSES
from clusterserve.control.status import ServerStatus
from clusterserve.poller import Poller
from clusterserve.worker_exits import RESTART_REASONS

PATH = "/metrics"


class _StatusCollector:
    """Turns one ``ServerStatus`` into metric families at each scrape."""

    def __init__(self, status: Callable[[], ServerStatus]) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        status = self.status()
        totals = status.requests
        requests = CounterMetricFamily(
            "clusterserve_requests", "Requests served, by status class.", labels=["status_class"])
        for name, count in zip(STATUS_CLASSES, totals.by_class, strict=True):
            requests.add_metric([name], count)
        yield requests
        bounds = [f"{bound:g}" for bound in DURATION_BUCKETS] + ["+Inf"]
        yield HistogramMetricFamily(
            "clusterserve_request_duration_seconds", "Time from a complete request head to the "
            "end of the response.", buckets=list(zip(bounds, totals.cumulative_buckets(), strict=True)),
            sum_value=totals.duration_sum)
        yield GaugeMetricFamily("clusterserve_requests_in_flight", "Requests in the app now.",
                                value=status.in_flight)
        yield _per_worker(status, "clusterserve_worker_connections",
                          "Connections each worker has open.", GaugeMetricFamily,
                          lambda w: w.connections)
        yield _per_worker(status, "clusterserve_worker_accepted_connections",
                          "Connections each worker has taken since it started.",
                          CounterMetricFamily, lambda w: w.accepted)
        yield _per_worker(status, "clusterserve_worker_requests",
                          "Requests each worker has served since it started.",
                          CounterMetricFamily, lambda w: w.requests)
        yield _per_worker(status, "clusterserve_worker_resident_memory_bytes",
                          "Resident memory of each worker.", GaugeMetricFamily,
                          lambda w: w.rss or 0)
        workers = GaugeMetricFamily("clusterserve_workers", "Workers by state.", labels=["state"])
        for state in ("booting", "serving", "replacing", "stopping", "aborting"):
            workers.add_metric([state], sum(w.state == state for w in status.workers))
        yield workers
        restarts = CounterMetricFamily("clusterserve_worker_restarts",
                                       "Workers replaced, by reason.", labels=["reason"])
        for reason in sorted(RESTART_REASONS | status.restarts.keys()):
            restarts.add_metric([reason], status.restarts.get(reason, 0))
        yield restarts
        if status.queued is not None:
            yield GaugeMetricFamily("clusterserve_dispatch_queue_length", "Round-robin: "
                                    "connections accepted by the arbiter, waiting for a worker.",
                                    value=status.queued)


def _per_worker(status: ServerStatus, name: str, text: str, family: Any,
                value: Callable[[Any], float]) -> Any:
    metric = family(name, text, labels=["worker", "pid"])
    for worker in status.workers:
        metric.add_metric([str(worker.worker), str(worker.pid)], value(worker))
    return metric


class MetricsEndpoint:
    """``GET /metrics`` over HTTP/1.1, answered from the arbiter's loop."""

    def __init__(self, listener: socket.socket, poller: Poller,
                 status: Callable[[], ServerStatus]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatusCollector(status))
        self.server = ExchangeServer(listener, poller, self._reply,
                                     too_large=_response(431, b"request head too large\n"))

    def _reply(self, received: bytes) -> bytes | None:
        parser = h11.Connection(h11.SERVER)
        parser.receive_data(received)
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return _response(400, b"bad request\n")
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):
            return _response(400, b"bad request\n")
        if event.target.split(b"?", 1)[0] != PATH.encode():
            return _response(404, b"metrics are at /metrics\n")
        if event.method not in (b"GET", b"HEAD"):
            return _response(405, b"use GET\n", extra=(("Allow", "GET, HEAD"),))
        body = generate_latest(self.registry)
        return _response(200, b"" if event.method == b"HEAD" else body, CONTENT_TYPE_LATEST,
                         length=len(body))

    def expire(self, now: float) -> None:
        self.server.expire(now)

    def close(self) -> None:
        self.server.close()


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: tuple[tuple[str, str], ...] = (), length: int | None = None) -> bytes:
    headers = [("Content-Type", content_type),
               ("Content-Length", str(len(body) if length is None else length)),
               ("Connection", "close"), *extra]
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("latin-1") + b"\r\n" + body
