"""A snapshot of the server, as the arbiter sees it: for ``ctl status`` and for metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from clusterserve import process
from clusterserve.control.request_stats import RequestStats
from clusterserve.worker_lifecycle import WorkerState


class WorkerView(Protocol):
    """What the arbiter knows of one worker (``arbiter.WorkerHandle``)."""

    age: int
    pid: int
    generation: int
    started: float
    last_heartbeat: float
    state: WorkerState
    requests: int
    accepted: int
    open_connections: int
    in_flight: int
    stats: RequestStats


# How ``ctl status`` and the metrics name each state of a worker.
STATE_NAMES = {
    WorkerState.BOOTING: "booting",  # forked, app not ready yet
    WorkerState.READY: "serving",
    WorkerState.RETIRING: "replacing",  # serving until its replacement is ready
    WorkerState.STOPPING: "stopping",
    WorkerState.ABORTED: "aborting",  # SIGABRT sent, SIGKILL next
    WorkerState.KILLED: "killed",
    WorkerState.GONE: "gone",
}


@dataclass
class WorkerStatus:
    worker: int  # the worker's number, in start order
    pid: int
    generation: int
    age: float  # seconds since it was forked
    state: str
    connections: int  # open now
    accepted: int
    requests: int  # served
    in_flight: int
    last_heartbeat: float  # seconds ago
    rss: int | None  # bytes


@dataclass
class ServerStatus:
    pid: int
    version: str
    app: str
    dispatch: str
    state: str
    generation: int
    uptime: float
    workers_wanted: int
    queued: int | None  # round-robin: connections waiting in the arbiter
    workers: list[WorkerStatus]
    restarts: dict[str, int]  # workers replaced, by reason
    requests: RequestStats = field(repr=False)  # every request since start, by every worker

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["workers"] = [asdict(worker) for worker in self.workers]
        data["requests"] = self.requests.to_message()
        data["totals"] = {
            "workers": len(self.workers),
            "connections": sum(w.connections for w in self.workers),
            "accepted": sum(w.accepted for w in self.workers),
            "requests": sum(w.requests for w in self.workers),
            "in_flight": self.in_flight,
            "rss": sum(w.rss or 0 for w in self.workers),
        }
        return data


def worker_statuses(handles: Iterable[WorkerView]) -> list[WorkerStatus]:
    now = time.monotonic()
    return [
        WorkerStatus(
            worker=h.age, pid=h.pid, generation=h.generation, age=round(now - h.started, 1),
            state=STATE_NAMES[h.state], connections=h.open_connections, accepted=h.accepted,
            requests=h.requests, in_flight=h.in_flight,
            last_heartbeat=round(now - h.last_heartbeat, 2), rss=process.resident_bytes(h.pid))
        for h in sorted(handles, key=lambda h: h.age)
    ]
