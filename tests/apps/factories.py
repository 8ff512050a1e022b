"""Apps as people write them with factories, and an ASGI 2 app, for interface detection."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def create_app() -> FastAPI:
    """FastAPI's factory shape: meant for ``--factory``."""
    app = FastAPI()

    @app.get("/")
    def index() -> dict[str, str]:
        return {"served": "by the factory's app"}

    return app


class Asgi2App:
    """ASGI 2: called with the scope; its instance gets receive and send."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"asgi2"})
