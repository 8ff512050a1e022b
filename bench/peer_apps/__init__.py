"""The apps every server of bench/peers.py serves.

``wsgi:app`` and ``asgi:app`` answer the same bytes on the same paths:

- ``/``: ``Hello, world!\\n`` (14 bytes, text/plain)
- ``/64k``: 65,536 bytes (application/octet-stream), built once at import
- ``/upload``: reads the whole request body and answers its length in bytes

``flask_api:app`` (WSGI) and ``starlette_api:app`` (ASGI) are the same small
JSON API: ``GET /api/items/<id>?fields=...`` answers one item as JSON.
``django_app`` is a minimal Django project for the preload memory scenario.
"""
