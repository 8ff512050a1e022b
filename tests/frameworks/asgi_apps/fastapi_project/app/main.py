"""The FastAPI app of the ASGI matrix, laid out as FastAPI's "Bigger Applications" guide
lays one out, and run as the guide runs it: ``app.main:app`` from this directory."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from tests.frameworks.asgi_apps.records import record

from .routers import items, live, users


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    record(f"startup-{os.getpid()}")
    yield {"started_by": os.getpid()}
    record(f"shutdown-{os.getpid()}")


app = FastAPI(lifespan=lifespan)
app.include_router(users.router)
app.include_router(items.router)
app.include_router(live.router)


@app.get("/")
async def root(request: Request) -> dict[str, int]:
    return {"pid": os.getpid(), "started_by": request.state.started_by}
