"""Keeping one failing step from stopping the arbiter, and from flooding its log.

The arbiter runs each event it handles (a signal, a worker's message or
exit, a poller callback) and each step of its housekeeping under a
``Breaker``.  An exception there is logged with its traceback and the
arbiter goes on: what a worker, a client or an operator does must never
stop it.  (A failure that leaves no safe way forward, the listening sockets
being gone, is not an exception but an event of the arbiter's own table.)

The same failure of the same step again and again (a fork that fails on
every tick) is logged once with its traceback, then once more to say it
keeps failing; a housekeeping step is then tried less and less often (1 s,
2 s, ... up to ``MAX_BACKOFF``) until it works again, which is logged too.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from logging import Logger

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


@dataclass
class _Failing:
    signature: tuple[str, str, str]  # the exception's type, its message, where it was raised
    count: int = 1
    backoff: float = 0.0
    retry_at: float = 0.0


class Breaker:
    def __init__(self, log: Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self._failing: dict[str, _Failing] = {}
        self.failures = 0  # every failure so far, logged or not

    def event(self, step: str, action: Callable[[], object]) -> bool:
        """Handle one event; False if it failed (and was logged, once per run of failures)."""
        return self._run(step, action, periodic=False)

    def periodic(self, step: str, action: Callable[[], object]) -> bool:
        """Run a housekeeping step, unless it keeps failing and its back-off has not run out."""
        failing = self._failing.get(step)
        if failing is not None and self.clock() < failing.retry_at:
            return False
        return self._run(step, action, periodic=True)

    def _run(self, step: str, action: Callable[[], object], periodic: bool) -> bool:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - the point of this module
            self._failed(step, err, periodic)
            return False
        failing = self._failing.pop(step, None)
        if failing is not None and failing.count > 1:
            self.log.info("%s works again (it failed %d times in a row)", step, failing.count)
        return True

    def _failed(self, step: str, err: Exception, periodic: bool) -> None:
        self.failures += 1
        signature = _signature(err)
        failing = self._failing.get(step)
        if failing is None or failing.signature != signature:
            self._failing[step] = _Failing(signature)
            self.log.error("%s failed; the arbiter goes on", step, exc_info=err)
            return
        failing.count += 1
        failing.backoff = min(MAX_BACKOFF, failing.backoff * 2) if failing.backoff else FIRST_BACKOFF
        failing.retry_at = self.clock() + failing.backoff
        if failing.count == 2:
            retrying = f"retrying in {failing.backoff:.0f}s, then less and less often; " if periodic else ""
            self.log.error("%s keeps failing (%s: %s); %snot logging it again until it works",
                           step, signature[0], signature[1], retrying)


def _signature(err: Exception) -> tuple[str, str, str]:
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return type(err).__name__, str(err)[:200], where
