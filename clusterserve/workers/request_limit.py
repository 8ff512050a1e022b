"""``max_requests`` for the ASGI worker: count requests as they start, and close
every connection from the request that reaches the limit on.

uvicorn counts a request when its response is complete, and the worker checks
that count once per tick: meanwhile a keep-alive client's next requests would
still be served.  This middleware counts each HTTP request as the app gets it;
from the one that reaches the limit on, each response carries ``Connection:
close`` (both of uvicorn's protocols then close the connection after it), and
``on_limit`` tells the worker to stop taking connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CLOSE = (b"connection", b"close")


class RequestLimit:
    def __init__(self, app: Any, limit: int, on_limit: Callable[[], None]) -> None:
        self.app = app
        self.limit = limit
        self.on_limit = on_limit
        self.taken = 0

    @property
    def reached(self) -> bool:
        return self.taken >= self.limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.taken += 1
        if self.taken == self.limit:
            self.on_limit()
        if not self.reached:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"connection" and b"close" in value.lower()
                           for name, value in headers):
                    message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await self.app(scope, receive, send_closing)
