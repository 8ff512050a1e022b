import hashlib
import time
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_from_directory, stream_with_context

bp = Blueprint("files", __name__)


@bp.get("/files/<path:name>")
def download(name):
    return send_from_directory(current_app.config["DATA_DIR"], name)


@bp.post("/upload")
def upload():
    uploaded = request.files.get("file")
    if uploaded is None or not uploaded.filename:
        abort(400, "no file")
    digest = hashlib.sha256()
    size = 0
    while chunk := uploaded.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(filename=uploaded.filename, size=size, sha256=digest.hexdigest(),
                   note=request.form.get("note"))


@bp.get("/prefs")
def set_prefs():
    response = jsonify(theme=request.args["theme"])
    response.set_cookie("theme", request.args["theme"], max_age=3600, httponly=True, samesite="Lax")
    return response


@bp.get("/theme")
def theme():
    return jsonify(theme=request.cookies.get("theme"))


@bp.get("/stream/<name>")
def stream(name):
    """One line, then (within 10 s) the go-ahead file SIGNAL_DIR/name, then the rest.

    The generator reads ``request`` while it runs: stream_with_context keeps
    the request context alive for it.
    """
    signal_file = Path(current_app.config["SIGNAL_DIR"]) / name

    def lines():
        yield f"hello {request.args.get('who', 'nobody')}\n"
        deadline = time.monotonic() + 10
        while not signal_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for number in range(100):
            yield f"{request.path} {number}\n"
        yield "signalled\n" if signal_file.exists() else "timed out\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")
