"""The data behind both JSON APIs, so Flask and Starlette answer the same bytes."""

TAGS = ("red", "green", "blue", "small", "large")


def item(item_id: int, fields: str | None) -> dict:
    data = {
        "id": item_id,
        "name": f"item {item_id}",
        "price": round(item_id * 1.25, 2),
        "tags": [TAGS[(item_id + i) % len(TAGS)] for i in range(3)],
        "in_stock": item_id % 3 != 0,
    }
    if fields:
        wanted = fields.split(",")
        data = {key: value for key, value in data.items() if key in wanted}
    return data
