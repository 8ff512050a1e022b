"""A FastAPI app with a lifespan and a WebSocket.

    pip install fastapi
    clusterserve examples.fastapi_app:app -w 4

FastAPI apps are ASGI: each worker serves them with uvicorn's protocols
(WebSockets need the ``websockets`` package, in ``clusterserve[standard]``).
The lifespan runs in every worker: startup before the worker reports ready,
shutdown when it stops gracefully (TERM, a HUP reload, ``max_requests``).
"""

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Open pools and clients here: once per worker, after the fork.
    app.state.greeting = "Hello from FastAPI"
    app.state.started_in = os.getpid()
    yield
    # Close them here.


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index() -> dict[str, object]:
    return {"message": app.state.greeting, "worker": app.state.started_in}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect:
        pass
