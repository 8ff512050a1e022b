"""A small Flask JSON API: ``GET /api/items/<id>?fields=a,b`` (WSGI)."""

from flask import Flask, jsonify, request

from .items import item

app = Flask(__name__)
app.json.sort_keys = False  # the same key order as Starlette's JSONResponse


@app.get("/api/items/<int:item_id>")
def get_item(item_id: int):
    return jsonify(item(item_id, request.args.get("fields")))
