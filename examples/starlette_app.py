"""A Starlette app with lifespan state and a WebSocket echo.

    pip install starlette
    clusterserve examples.starlette_app:app -w 4
"""

import contextlib
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app):
    # Runs in each worker before it reports ready; the state reaches every request.
    yield {"greeting": "Hello", "worker": os.getpid()}


async def homepage(request: Request) -> JSONResponse:
    return JSONResponse({"message": f"{request.state.greeting}, world!", "worker": request.state.worker})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo: " + await websocket.receive_text())
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[Route("/", homepage), WebSocketRoute("/ws", echo)], lifespan=lifespan)
