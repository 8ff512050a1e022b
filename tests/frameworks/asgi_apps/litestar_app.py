"""A Litestar app as its users write one: msgspec-validated bodies, a cookie login,
background tasks, a streamed response, a WebSocket listener and lifespan hooks."""

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Litestar, Request, Response, get, post, websocket_listener
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException
from litestar.response import Stream

from tests.frameworks.asgi_apps.records import record, released


class Book(msgspec.Struct):
    title: Annotated[str, msgspec.Meta(min_length=1)]
    pages: Annotated[int, msgspec.Meta(gt=0)]


class Login(msgspec.Struct):
    username: str
    password: str


@post("/books")
async def create_book(data: Book) -> dict[str, object]:
    return {"title": data.title, "pages": data.pages, "sheets": (data.pages + 1) // 2}


def write_receipt(book_id: int) -> None:
    record(f"receipt-{book_id}", f"pid {os.getpid()}")


@post("/books/{book_id:int}/notify", status_code=202)
async def notify(book_id: int) -> Response[dict[str, bool]]:
    return Response({"queued": True}, background=BackgroundTask(write_receipt, book_id))


@post("/login")
async def login(data: Login) -> Response[dict[str, str]]:
    if data.password != f"{data.username}-password":
        raise NotAuthorizedException("wrong username or password")
    return Response({"logged_in": data.username},
                    cookies=[Cookie(key="user", value=data.username, httponly=True, samesite="lax")])


@get("/me")
async def me(request: Request) -> dict[str, str]:
    user = request.cookies.get("user")
    if not user:
        raise NotAuthorizedException("not logged in")
    return {"username": user}


@post("/logout")
async def logout() -> Response[dict[str, bool]]:
    response = Response({"logged_out": True})
    response.delete_cookie("user")
    return response


@get("/stream")
async def stream(release: str) -> Stream:
    """The first line at once, the rest once the test dropped the file ``release``."""

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

    return Stream(body(), media_type="text/plain")


@websocket_listener("/ws")
async def shout(data: str) -> str:
    return data.upper()


def started() -> None:
    record(f"startup-{os.getpid()}")


def stopped() -> None:
    record(f"shutdown-{os.getpid()}")


app = Litestar([create_book, notify, login, me, logout, stream, shout],
               on_startup=[started], on_shutdown=[stopped])
