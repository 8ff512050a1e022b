"""How a connection reaches a worker: one module per dispatch mode.

Each mode has an acceptor on the worker's side with the same small
interface (``resume``, ``pause``, ``accept_queued``, ``sweep``, ``close``,
``on_messages``, ``connection_closed``, ``hand_back``, ``flush``, ``accepted``), so the WSGI
and ASGI workers serve every mode with the same code.

A worker gives two answers about its load.  ``has_room``: it would serve a
new connection at once (a free app thread); in ``shared`` and ``reuseport``
mode it accepts only then, leaving the rest to idler workers, and in
``round-robin`` mode the arbiter passes connections only to workers that
said so.  ``can_hold``: it is below ``worker_connections`` and not
stopping; in ``round-robin`` mode a connection the arbiter passed just as
the worker's threads filled up is kept rather than bounced.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from clusterserve.dispatch.round_robin import ChannelAcceptor
    from clusterserve.dispatch.shared import SharedAcceptor
    from clusterserve.workers.base import Worker

    Acceptor: TypeAlias = SharedAcceptor | ChannelAcceptor


def make_acceptor(worker: Worker, poller: Any, on_connection: Callable[[socket.socket, Any], None],
                  has_room: Callable[[], bool], can_hold: Callable[[], bool],
                  accept_batch: int = 0) -> Acceptor:
    """The worker-side acceptor for the configured dispatch mode."""
    from clusterserve.dispatch.reuseport import ReuseportAcceptor
    from clusterserve.dispatch.round_robin import ChannelAcceptor
    from clusterserve.dispatch.shared import SharedAcceptor

    mode = worker.cfg.dispatch
    if mode == "round-robin":
        return ChannelAcceptor(worker.channel, on_connection, has_room, can_hold)
    if mode == "reuseport":
        return ReuseportAcceptor(worker.listeners, poller, on_connection, has_room, accept_batch)
    return SharedAcceptor(worker.listeners, poller, on_connection, has_room, accept_batch)
