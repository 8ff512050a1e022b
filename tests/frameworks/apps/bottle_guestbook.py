"""A Bottle app: a guestbook, in the style of Bottle's tutorial.

Routes on a ``Bottle()`` instance, SimpleTemplate pages, a form POST and a
redirect, a signed cookie, ``static_file`` (conditional and ranged, whole
files through ``wsgi.file_wrapper``), an upload through ``request.files``,
a JSON route and a custom 404 page. Entries live in SQLite (``GUESTBOOK_DB``)
and files in ``GUESTBOOK_FILES``, shared by every worker.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bottle import Bottle, HTTPResponse, redirect, request, response, static_file, template

DB = os.environ.get("GUESTBOOK_DB", "guestbook.sqlite3")
FILES = Path(os.environ.get("GUESTBOOK_FILES", "guestbook-files"))
COOKIE_SECRET = "a guestbook secret"

PAGE = """<!doctype html>
<title>Guestbook</title>
% if visitor:
<p class="welcome">Welcome back, {{visitor}}!</p>
% end
% if error:
<p class="error">{{error}}</p>
% end
<ul>
% for name, message in entries:
  <li><b>{{name}}</b>: {{message}}</li>
% end
</ul>
<form method="post" action="/sign"><input name="name"><textarea name="message"></textarea></form>
"""

NOT_FOUND = """<!doctype html>
<title>Not here</title>
<p class="missing">Nothing at {{path}}.</p>
"""

app = Bottle()


def connect() -> sqlite3.Connection:
    conn = sqlite3.connect(DB, timeout=10)
    conn.execute("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, name TEXT, message TEXT)")
    return conn


def entries() -> list[tuple[str, str]]:
    with connect() as conn:
        return conn.execute("SELECT name, message FROM entries ORDER BY id").fetchall()


def page(error: str = "") -> str:
    visitor = request.get_cookie("visitor", secret=COOKIE_SECRET)
    return template(PAGE, visitor=visitor, error=error, entries=entries())


@app.get("/")
def index() -> str:
    return page()


@app.post("/sign")
def sign() -> str:
    name = (request.forms.getunicode("name") or "").strip()
    message = (request.forms.getunicode("message") or "").strip()
    if not name or not message:
        raise HTTPResponse(page(error="Both a name and a message, please."), status=400)
    with connect() as conn:
        conn.execute("INSERT INTO entries (name, message) VALUES (?, ?)", (name, message))
    response.set_cookie("visitor", name, secret=COOKIE_SECRET, path="/", httponly=True)
    redirect("/")


@app.get("/api/entries")
def api_entries() -> dict:
    return {"entries": [{"name": name, "message": message} for name, message in entries()]}


@app.get("/static/<filename:path>")
def static(filename: str):
    return static_file(filename, root=str(FILES))


@app.post("/upload")
def upload() -> dict:
    upload = request.files.get("upload")
    if upload is None:
        raise HTTPResponse({"error": "no file"}, status=400)
    upload.save(str(FILES), overwrite=True)
    return {"saved": upload.filename, "size": (FILES / upload.filename).stat().st_size}


@app.error(404)
def not_found(error) -> str:
    return template(NOT_FOUND, path=request.path)


FILES.mkdir(parents=True, exist_ok=True)
