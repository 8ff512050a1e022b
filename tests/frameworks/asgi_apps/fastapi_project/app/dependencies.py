"""Dependencies shared by the routers, and where the app writes what happened."""

import os
from pathlib import Path
from typing import Annotated

from fastapi import Header, HTTPException

TOKEN = "fake-super-secret-token"


async def get_token_header(x_token: Annotated[str, Header()]) -> None:
    if x_token != TOKEN:
        raise HTTPException(status_code=400, detail="X-Token header invalid")


def record(name: str, text: str = "") -> None:
    """One event (startup, shutdown, a background task) as a file that appears whole."""
    path = Path(os.environ["ASGI_APPS_RECORDS"]) / name
    partial = path.with_name(f".{name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.rename(path)


def released(name: str) -> bool:
    """Whether the test has dropped the file ``name`` that a waiting response waits for."""
    return (Path(os.environ["ASGI_APPS_RECORDS"]) / name).exists()
