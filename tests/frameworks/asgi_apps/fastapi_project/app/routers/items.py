"""JSON bodies validated by pydantic, and background tasks that run after the response."""

import asyncio
import os

from fastapi import APIRouter, BackgroundTasks, Depends
from pydantic import BaseModel, Field

from tests.frameworks.asgi_apps.records import record

from ..dependencies import get_token_header

router = APIRouter(prefix="/items", tags=["items"], dependencies=[Depends(get_token_header)])


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


class Note(BaseModel):
    message: str


@router.post("/")
async def create_item(item: Item) -> dict[str, object]:
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2), "tags": item.tags}


def write_receipt(item_id: int, message: str) -> None:
    record(f"receipt-{item_id}", f"{message} (pid {os.getpid()})")


async def write_audit(item_id: int) -> None:
    await asyncio.sleep(0.01)
    record(f"audit-{item_id}", "notified")


@router.post("/{item_id}/notify", status_code=202)
async def notify(item_id: int, note: Note, background_tasks: BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(write_receipt, item_id, note.message)
    background_tasks.add_task(write_audit, item_id)
    return {"queued": True}
