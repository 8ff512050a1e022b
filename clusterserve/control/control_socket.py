"""The control socket: an arbiter-owned Unix socket that ``clusterserve ctl`` talks to.

One JSON object per line each way: ``{"command": "status"}``,
``{"command": "reload"}``, ``{"command": "scale", "workers": 4}``,
``{"command": "stop"}``; the reply is ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.  The socket is created with mode 0600
(``control_socket_mode``) before anyone can connect, so only its owner
(and root) can drive the server.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from clusterserve.control.exchange import ExchangeServer
from clusterserve.control.status import ServerStatus
from clusterserve.poller import Poller
from clusterserve.sockets import Listener, UnixAddress, bind_address

# Each command, and the fields it takes besides "command": nothing else is accepted.
COMMANDS = {"status": (), "reload": (), "scale": ("workers",), "stop": ()}


class Controlled(Protocol):
    """What the control socket asks of the arbiter; each returns a line for the user."""

    def status(self) -> ServerStatus: ...

    def start_reload(self) -> str: ...

    def scale(self, workers: int) -> str: ...

    def stop(self) -> str: ...


class ControlSocket:
    def __init__(self, path: str, mode: int, poller: Poller, target: Controlled) -> None:
        self.target = target
        umask = os.umask(0o177)  # no moment with looser permissions than 0600
        try:
            self.listener: Listener = bind_address(UnixAddress(path), backlog=16)
        finally:
            os.umask(umask)
        os.chmod(path, mode)
        self.server = ExchangeServer(self.listener.sock, poller, self._reply,
                                     too_large=_encode({"ok": False, "error": "request too large"}))

    def _reply(self, received: bytes) -> bytes | None:
        line, newline, _ = received.partition(b"\n")
        if not newline:
            return None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            return _encode({"ok": False, "error": "expected one JSON object per line"})
        try:
            return _encode({"ok": True, **self._run(request)})
        except ValueError as err:
            return _encode({"ok": False, "error": str(err)})

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if not isinstance(command, str) or command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
        extra = sorted(set(request) - {"command", *COMMANDS[command]})
        if extra:
            raise ValueError(f"{command} takes no field {extra[0]!r}")
        if command == "status":
            return {"status": self.target.status().to_json()}
        if command == "reload":
            return {"message": self.target.start_reload()}
        if command == "scale":
            workers = request.get("workers")
            if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
                raise ValueError("scale needs a whole number of workers, at least 1")
            return {"message": self.target.scale(workers)}
        return {"message": self.target.stop()}

    def expire(self, now: float) -> None:
        self.server.expire(now)

    def close(self, remove_file: bool) -> None:
        self.server.close()
        if remove_file:
            self.listener.close()  # removes the file


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode() + b"\n"
