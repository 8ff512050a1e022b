"""Server-sent events on Starlette with sse-starlette: numbered events that resume
from ``Last-Event-ID``, as a browser's EventSource uses them."""

import asyncio
import json
import os
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.frameworks.asgi_apps.records import record, released


async def events(request: Request) -> EventSourceResponse:
    """``count`` events (endless without), one every ``interval`` seconds; with
    ``release``, the second waits until the test has dropped that file."""
    stream = request.query_params["stream"]
    first = int(request.headers.get("last-event-id", "-1")) + 1
    count = request.query_params.get("count")
    last = first + int(count) if count is not None else None
    interval = float(request.query_params.get("interval", "0.05"))
    release = request.query_params.get("release")

    async def generate() -> AsyncIterator[ServerSentEvent]:
        n = first
        try:
            while last is None or n < last:
                yield ServerSentEvent(data=json.dumps({"n": n, "pid": os.getpid()}), id=str(n),
                                      event="tick")
                if release and n == first:
                    for _ in range(400):
                        if released(release):
                            break
                        await asyncio.sleep(0.025)
                n += 1
                await asyncio.sleep(interval)
        finally:
            record(f"closed-{stream}", f"{os.getpid()} after {n - first}")

    return EventSourceResponse(generate(), ping=5)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/events", events), Route("/health", health)])
