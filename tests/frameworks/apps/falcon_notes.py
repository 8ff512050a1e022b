"""A Falcon WSGI app: a small notes API, as Falcon's tutorial builds one.

Resources with responders, a hook that requires a login cookie, JSON media
and Falcon's HTTP errors, a multipart upload through the default media
handlers, and a file sent as ``resp.stream`` (``wsgi.file_wrapper``). Its
data lives in SQLite (``NOTES_DB``) and ``NOTES_FILES``, shared by every worker.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import falcon

DB = os.environ.get("NOTES_DB", "notes.sqlite3")
FILES = Path(os.environ.get("NOTES_FILES", "notes-files"))


def connect() -> sqlite3.Connection:
    conn = sqlite3.connect(DB, timeout=10)
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, owner TEXT, text TEXT NOT NULL)")
    return conn


def require_user(req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
    values = req.get_cookie_values("user")
    if not values:
        raise falcon.HTTPUnauthorized(title="Log in first")
    req.context.user = values[0]


class SessionResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = req.get_media()
        user = media.get("user") if isinstance(media, dict) else None
        if not isinstance(user, str) or not user:
            raise falcon.HTTPBadRequest(title="A user is required")
        resp.set_cookie("user", user, path="/", http_only=True, same_site="Lax")
        resp.media = {"user": user}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.unset_cookie("user", path="/")
        resp.status = falcon.HTTP_204


@falcon.before(require_user)
class NotesResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with connect() as conn:
            rows = conn.execute("SELECT id, text FROM notes WHERE owner = ? ORDER BY id", (req.context.user,))
            resp.media = [{"id": id_, "text": text} for id_, text in rows]

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = req.get_media()
        text = media.get("text") if isinstance(media, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise falcon.HTTPUnprocessableEntity(title="A note needs some text")
        with connect() as conn:
            note_id = conn.execute("INSERT INTO notes (owner, text) VALUES (?, ?)",
                                   (req.context.user, text)).lastrowid
        resp.status = falcon.HTTP_201
        resp.location = f"/notes/{note_id}"
        resp.media = {"id": note_id, "text": text}


@falcon.before(require_user)
class NoteResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, note_id: int) -> None:
        with connect() as conn:
            row = conn.execute("SELECT id, text FROM notes WHERE id = ? AND owner = ?",
                               (note_id, req.context.user)).fetchone()
        if row is None:
            raise falcon.HTTPNotFound()
        resp.media = {"id": row[0], "text": row[1]}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, note_id: int) -> None:
        with connect() as conn:
            conn.execute("DELETE FROM notes WHERE id = ? AND owner = ?", (note_id, req.context.user))
        resp.status = falcon.HTTP_204


class AttachmentsResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        saved = []
        for part in req.get_media():
            if part.name != "file":
                continue
            digest = hashlib.sha256()
            data = bytearray()
            while chunk := part.stream.read(65536):
                digest.update(chunk)
                data += chunk
            name = digest.hexdigest()
            (FILES / name).write_bytes(data)
            saved.append({"filename": part.filename, "size": len(data), "sha256": name})
        if not saved:
            raise falcon.HTTPBadRequest(title="No file part")
        resp.status = falcon.HTTP_201
        resp.media = saved

    def on_get_file(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        path = FILES / name
        if not name.isalnum() or not path.is_file():
            raise falcon.HTTPNotFound()
        resp.content_type = falcon.MEDIA_TEXT if name.endswith("txt") else "application/octet-stream"
        resp.stream = path.open("rb")
        resp.content_length = path.stat().st_size


app = falcon.App()
app.resp_options.secure_cookies_by_default = False
FILES.mkdir(parents=True, exist_ok=True)
attachments = AttachmentsResource()
app.add_route("/session", SessionResource())
app.add_route("/notes", NotesResource())
app.add_route("/notes/{note_id:int}", NoteResource())
app.add_route("/attachments", attachments)
app.add_route("/attachments/{name}", attachments, suffix="file")
