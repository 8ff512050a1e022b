"""``reuseport`` dispatch: one ``SO_REUSEPORT`` socket per worker slot.

The kernel hashes each new connection to one of the sockets of a port.
Closing such a socket resets the connections queued on it (unless Linux's
``net.ipv4.tcp_migrate_req`` is on), so the arbiter creates and holds every
slot's sockets for the life of the server:

- a worker that dies is replaced in the same slot, on the same sockets;
- a slot whose worker retires because the worker count shrank is *lent*:
  every remaining worker also watches its sockets (with ``EPOLLEXCLUSIVE``,
  so its share of traffic is spread among them, not doubled on one);
- a new slot takes a lent one back before new sockets are made.

``SlotTable`` is the arbiter's side; ``ReuseportAcceptor`` the worker's.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusterserve.channel import ADOPT, RELEASE, Message, Received
from clusterserve.dispatch.shared import SharedAcceptor
from clusterserve.poller import Poller
from clusterserve.sockets import BindError, Listener, TcpAddress, bind_reuseport

MIGRATE_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req"

SLOT_PREFIX = "slot-"  # LISTEN_FDNAMES is colon-separated

OCCUPIED = "occupied"
VACANT = "vacant"  # its worker died; the replacement takes it
LENT = "lent"  # its worker retired; the others watch its sockets meanwhile


def check_platform() -> str | None:
    """Why ``reuseport`` cannot work here, or None."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this platform has no SO_REUSEPORT"
    if sys.platform != "linux":
        return f"SO_REUSEPORT does not balance connections on {sys.platform}; use shared or round-robin"
    return None


def migration_note() -> str:
    """What happens to connections queued on a closed socket, for the start-up log."""
    try:
        with open(MIGRATE_SYSCTL, encoding="ascii") as stream:
            enabled = stream.read().strip() == "1"
    except OSError:
        return "this kernel cannot migrate queued connections between reuseport sockets"
    if enabled:
        return "net.ipv4.tcp_migrate_req=1: queued connections move if a socket closes"
    return "net.ipv4.tcp_migrate_req=0 (could be enabled to migrate queued connections)"


@dataclass
class Slot:
    number: int
    listeners: list[Listener]
    state: str = OCCUPIED

    @property
    def fds(self) -> list[int]:
        return [listener.sock.fileno() for listener in self.listeners]


class SlotTable:
    """Every slot's sockets, created on demand and never closed before the arbiter exits."""

    def __init__(self, addresses: list[TcpAddress], backlog: int) -> None:
        self._addresses = list(addresses)
        self._backlog = backlog
        self._slots: dict[int, Slot] = {}

    @classmethod
    def adopt(cls, inherited: list[tuple[Listener, str]], backlog: int) -> SlotTable:
        """The slots a USR2 predecessor passed on, named ``slot-N`` (in bind order)."""
        table = cls([], backlog)
        grouped: dict[str, list[Listener]] = {}
        for listener, name in inherited:
            if not name.startswith(SLOT_PREFIX):
                raise BindError("reuseport dispatch makes its own sockets; it cannot use "
                                f"sockets passed by systemd (fd {listener.sock.fileno()})")
            grouped.setdefault(name, []).append(listener)
        for listeners in grouped.values():
            # Lent: the first workers each claim one, and watch the others meanwhile.
            table._slots[len(table._slots)] = Slot(len(table._slots), listeners, LENT)
        first = next(iter(grouped.values()))
        table._addresses = [TcpAddress(*listener.sock.getsockname()[:2]) for listener in first]
        return table

    def labelled(self) -> list[tuple[Listener, str]]:
        """Every slot's sockets with a name that says whose they are (for a USR2 successor)."""
        return [(listener, f"{SLOT_PREFIX}{slot.number}")
                for slot in self._slots.values() for listener in slot.listeners]

    def create(self, count: int) -> None:
        """Bind ``count`` slots now, before any fork, so bind errors come first."""
        for _ in range(count):
            self._new_slot(VACANT)

    def _new_slot(self, state: str) -> Slot:
        listeners = []
        for index, address in enumerate(self._addresses):
            listener = bind_reuseport(address, self._backlog)
            if address.port == 0:
                # Every later slot binds the port the kernel chose for the first.
                self._addresses[index] = TcpAddress(address.host, listener.sock.getsockname()[1])
            listeners.append(listener)
        slot = Slot(len(self._slots), listeners, state)
        self._slots[slot.number] = slot
        return slot

    def claim(self) -> tuple[Slot, bool]:
        """A slot for a new worker: a vacant one, else a lent one (True), else a new one."""
        for wanted in (VACANT, LENT):
            for slot in self._slots.values():
                if slot.state == wanted:
                    slot.state = OCCUPIED
                    return slot, wanted == LENT
        return self._new_slot(OCCUPIED), False

    def vacate(self, number: int) -> None:
        self._slots[number].state = VACANT

    def lend(self, number: int) -> Slot:
        slot = self._slots[number]
        slot.state = LENT
        return slot

    def lent(self) -> list[Slot]:
        return [slot for slot in self._slots.values() if slot.state == LENT]

    def listeners_of(self, number: int) -> list[Listener]:
        return self._slots[number].listeners

    def listeners(self) -> list[Listener]:
        return [listener for slot in self._slots.values() for listener in slot.listeners]

    def first_slot(self) -> list[Listener]:
        return self._slots[0].listeners


class ReuseportAcceptor(SharedAcceptor):
    """Accepts on its slot's sockets, plus any lent slots the arbiter sends."""

    def __init__(self, listeners: list[Listener], poller: Poller,
                 on_connection: Callable[[socket.socket, Any], None],
                 has_room: Callable[[], bool], accept_batch: int = 0) -> None:
        super().__init__(listeners, poller, on_connection, has_room, accept_batch)
        self._lent: dict[int, list[socket.socket]] = {}

    def on_messages(self, messages: list[Received]) -> None:
        for message in messages:
            if not isinstance(message, Message):
                super().on_messages([message])
            elif message.kind == ADOPT:
                sockets = [socket.socket(fileno=fd) for fd in message.fds]
                self._lent[int(message.fields["slot"])] = sockets
                self.add_sockets(sockets)
            elif message.kind == RELEASE:
                self.remove_sockets(self._lent.pop(int(message.fields["slot"]), []))
            else:
                super().on_messages([message])
