"""A response streamed while the client reads it, and a WebSocket."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Cookie, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from tests.frameworks.asgi_apps.records import released

router = APIRouter(prefix="/live", tags=["live"])


@router.get("/stream")
async def stream(release: str) -> StreamingResponse:
    """The first line goes out at once; the rest only once the client has dropped the
    file ``release``, which it does after it read the first line: so the test passes
    only if the server sends each chunk as the app gives it."""

    async def body() -> AsyncIterator[str]:
        yield "line 0\n"
        for _ in range(400):
            if released(release):
                break
            await asyncio.sleep(0.025)
        else:
            yield "never released\n"
            return
        for n in range(1, 4):
            yield f"line {n}\n"

    return StreamingResponse(body(), media_type="text/plain")


@router.websocket("/ws")
async def chat(websocket: WebSocket, user: Annotated[str, Cookie()] = "anonymous") -> None:
    await websocket.accept()
    await websocket.send_json({"hello": user})
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4001, reason="bye " + user)
                return
            await websocket.send_text(text.upper())
    except WebSocketDisconnect:
        pass
