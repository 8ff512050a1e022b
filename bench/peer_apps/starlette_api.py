"""A small Starlette JSON API: ``GET /api/items/{id}?fields=a,b`` (ASGI)."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .items import item


async def get_item(request: Request) -> JSONResponse:
    return JSONResponse(item(request.path_params["item_id"], request.query_params.get("fields")))


app = Starlette(routes=[Route("/api/items/{item_id:int}", get_item)])
