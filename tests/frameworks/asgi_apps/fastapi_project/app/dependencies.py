"""Dependencies shared by the routers."""

from typing import Annotated

from fastapi import Header, HTTPException

TOKEN = "fake-super-secret-token"


async def get_token_header(x_token: Annotated[str, Header()]) -> None:
    if x_token != TOKEN:
        raise HTTPException(status_code=400, detail="X-Token header invalid")
