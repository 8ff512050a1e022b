"""A Quart app as its users write one: a signed-cookie session with flashed messages
around a login form, a file upload, a streamed response and a WebSocket that knows
the session's user."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

from quart import Quart, flash, redirect, render_template_string, request, session, url_for, websocket
from quart.typing import ResponseReturnValue

from tests.frameworks.asgi_apps.records import record, released

app = Quart(__name__)
app.secret_key = "asgi-matrix-only"
USERS = {"ada": "lovelace"}

PAGE = """<!doctype html>
<title>Quart</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
{% if user %}<p>Signed in as {{ user }}</p>
{% else %}<form method="post" action="{{ url_for('login') }}">
<input name="username"><input name="password" type="password"></form>{% endif %}
"""


@app.before_serving
async def started() -> None:
    record(f"startup-{os.getpid()}")


@app.after_serving
async def stopped() -> None:
    record(f"shutdown-{os.getpid()}")


@app.get("/")
async def index() -> str:
    return await render_template_string(PAGE, user=session.get("user"))


@app.post("/login")
async def login() -> ResponseReturnValue:
    form = await request.form
    username = form.get("username", "")
    if USERS.get(username) != form.get("password"):
        await flash("Wrong username or password.")
    else:
        session["user"] = username
        await flash(f"Welcome, {username}!")
    return redirect(url_for("index"))


@app.post("/logout")
async def logout() -> ResponseReturnValue:
    session.clear()
    await flash("Signed out.")
    return redirect(url_for("index"))


@app.post("/upload")
async def upload() -> ResponseReturnValue:
    if "user" not in session:
        return {"error": "sign in first"}, 401
    document = (await request.files)["document"]
    data = document.read()
    return {"filename": document.filename, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "user": session["user"]}


@app.get("/stream")
async def stream() -> ResponseReturnValue:
    """The first part at once, the rest once the test dropped the file ``release``."""
    release = request.args["release"]

    async def body() -> AsyncIterator[bytes]:
        yield b"part 0\n"
        for _ in range(400):
            if released(release):
                break
            await asyncio.sleep(0.025)
        else:
            yield b"never released\n"
            return
        for n in range(1, 4):
            yield f"part {n}\n".encode()

    return body(), 200, {"Content-Type": "text/plain"}


@app.websocket("/ws")
async def chat() -> None:
    user = session.get("user", "anonymous")
    await websocket.send_json({"hello": user})
    while True:
        message = await websocket.receive()
        if message == "bye":
            await websocket.close(4002, f"bye {user}")
            return
        await websocket.send(message[::-1])
