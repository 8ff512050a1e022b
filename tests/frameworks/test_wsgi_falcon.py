"""A Falcon WSGI app (tests/frameworks/apps/falcon_notes.py), driven as an API client drives it.

A login cookie guarding a JSON resource, Falcon's errors for a missing
login, bad JSON and a failed validation, create/read/delete with
``Location``, and a multipart upload sent back as a ``resp.stream`` file.
Once per server (clusterserve per dispatch mode, under wsgiref.validate, gunicorn).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.frameworks.servers import assert_files_closed, client, no_new_faults, serve

pytestmark = [pytest.mark.timeout(180), pytest.mark.http_path]

APP = "tests.frameworks.apps.falcon_notes:app"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("falcon")


@pytest.fixture(scope="module")
def site(server_kind, data):
    env = {"NOTES_DB": str(data / "notes.sqlite3"), "NOTES_FILES": str(data / "files")}
    with serve(server_kind, APP, env=env, ready_path="/session") as server:
        yield server


@pytest.fixture
def api(site):
    with client(site) as c, no_new_faults(site):
        yield c


def test_a_login_cookie_guards_create_read_and_delete(api):
    refused = api.get("/notes")
    assert refused.status_code == 401
    assert refused.json()["title"] == "Log in first"
    assert api.post("/session", json={}).status_code == 400

    logged_in = api.post("/session", json={"user": "carol"})
    assert (logged_in.status_code, logged_in.json()) == (200, {"user": "carol"})
    assert "HttpOnly" in logged_in.headers["set-cookie"]

    invalid = api.post("/notes", json={"text": "  "})
    assert (invalid.status_code, invalid.json()["title"]) == (422, "A note needs some text")
    created = api.post("/notes", json={"text": "buy milk"})
    assert created.status_code == 201
    location = created.headers["location"]
    assert location == f"/notes/{created.json()['id']}"
    assert api.get(location).json() == created.json()
    assert created.json() in api.get("/notes").json()

    assert api.delete(location).status_code == 204
    assert api.get(location).status_code == 404

    assert api.delete("/session").status_code == 204
    assert "user" not in api.cookies
    assert api.get("/notes").status_code == 401


def test_malformed_json_is_refused_with_falcons_error(api):
    api.post("/session", json={"user": "dan"})
    response = api.post("/notes", content=b'{"text": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["title"] == "Invalid JSON"


def test_multipart_upload_then_the_file_streamed_back(api, site, data):
    content = os.urandom(2 * 1024 * 1024 + 17)
    digest = hashlib.sha256(content).hexdigest()
    uploaded = api.post("/attachments", data={"comment": "ignored"},
                        files={"file": ("blob.bin", content, "application/octet-stream")})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json() == [{"filename": "blob.bin", "size": len(content), "sha256": digest}]

    download = api.get(f"/attachments/{digest}")
    assert download.status_code == 200
    assert download.headers["content-length"] == str(len(content))
    assert download.content == content
    assert_files_closed(site, data / "files")
    assert api.get("/attachments/nothing").status_code == 404
    assert api.post("/attachments", data={"comment": "no file"}, files={"other": ("x", b"x")}).status_code == 400
