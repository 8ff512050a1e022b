"""A Flask app in the tutorial's layout (tests/frameworks/apps/flaskr), driven as its users drive it.

The session and ``flash`` through a login and a logout, ``set_cookie``,
``send_file`` (whole, conditional, ranged), ``stream_with_context`` reaching
the client while it is produced, and a 5 MB upload through ``request.files``
(with a Content-Length, and in a chunked body).
Once per server (clusterserve per dispatch mode, under wsgiref.validate, gunicorn).
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from tests.frameworks.servers import assert_files_closed, client, no_new_faults, serve

pytestmark = [pytest.mark.timeout(180), pytest.mark.http_path]

APP = "tests.frameworks.apps.flaskr:create_app()"
DATA = os.urandom(1024 * 1024)
UPLOAD = os.urandom(5 * 1024 * 1024)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("flask-data")
    (data_dir / "data.bin").write_bytes(DATA)
    return data_dir, tmp_path_factory.mktemp("flask-signals")


@pytest.fixture(scope="module")
def site(server_kind, dirs):
    data_dir, signal_dir = dirs
    env = {"FLASK_DATA_DIR": str(data_dir), "FLASK_SIGNAL_DIR": str(signal_dir)}
    with serve(server_kind, APP, env=env, excused=["read-without-size"]) as server:
        yield server


@pytest.fixture
def browser(site):
    with client(site) as c, no_new_faults(site):
        yield c


def test_login_keeps_a_session_and_flashes_each_message_once(browser):
    assert "Not logged in." in browser.get("/").text

    refused = browser.post("/auth/login", data={"username": ""})
    assert refused.status_code == 400
    assert '<div class="flash">Username is required.</div>' in refused.text

    logged_in = browser.post("/auth/login", data={"username": "alice"})
    assert (logged_in.status_code, logged_in.headers["location"]) == (302, "/")
    session_cookie = next(v for v in logged_in.headers.get_list("set-cookie") if v.startswith("session="))
    assert "HttpOnly" in session_cookie
    home = browser.get("/")
    assert "Hello, alice!" in home.text
    assert '<div class="flash">Logged in as alice.</div>' in home.text
    again = browser.get("/")
    assert "Hello, alice!" in again.text and "flash" not in again.text

    logged_out = browser.post("/auth/logout")
    assert logged_out.status_code == 302
    home = browser.get("/")
    assert "Not logged in." in home.text
    assert '<div class="flash">Logged out.</div>' in home.text


def test_set_cookie_comes_back_on_the_next_request(browser):
    assert browser.get("/theme").json() == {"theme": None}
    response = browser.get("/prefs", params={"theme": "dark"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("theme=dark;") and "Max-Age=3600" in cookie and "SameSite=Lax" in cookie
    assert browser.get("/theme").json() == {"theme": "dark"}


def test_send_file_whole_conditional_ranged_and_head(browser, site, dirs):
    whole = browser.get("/files/data.bin")
    assert whole.status_code == 200
    assert whole.headers["content-length"] == str(len(DATA))
    assert whole.content == DATA
    etag = whole.headers["etag"]

    not_modified = browser.get("/files/data.bin", headers={"If-None-Match": etag})
    assert (not_modified.status_code, not_modified.content) == (304, b"")

    ranged = browser.get("/files/data.bin", headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    assert ranged.content == DATA[1000:2000]

    head = browser.head("/files/data.bin")
    assert (head.status_code, head.headers["content-length"], head.content) == (200, str(len(DATA)), b"")
    assert browser.get("/files/missing.bin").status_code == 404
    assert_files_closed(site, dirs[0])


def test_stream_with_context_reaches_the_client_while_it_is_produced(browser, dirs):
    name = uuid.uuid4().hex
    with browser.stream("GET", f"/stream/{name}", params={"who": "bob"}) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        lines = response.iter_lines()
        assert next(lines) == "hello bob"
        (dirs[1] / name).touch()
        rest = list(lines)
    assert rest == [f"/stream/{name} {n}" for n in range(100)] + ["signalled"]


def test_five_megabyte_upload_through_request_files(browser):
    response = browser.post("/upload", data={"note": "five megabytes"},
                            files={"file": ("big.bin", UPLOAD, "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json() == {"filename": "big.bin", "size": len(UPLOAD),
                               "sha256": hashlib.sha256(UPLOAD).hexdigest(), "note": "five megabytes"}
    assert browser.post("/upload", data={"note": "no file"}).status_code == 400


def test_five_megabyte_upload_in_a_chunked_body(browser):
    """As ``curl -H 'Transfer-Encoding: chunked' -F file=@...`` sends it: no Content-Length."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nchunked\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + UPLOAD + f"\r\n--{boundary}--\r\n".encode()
    pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
    response = browser.post("/upload", content=pieces,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert response.json() == {"filename": "big.bin", "size": len(UPLOAD),
                               "sha256": hashlib.sha256(UPLOAD).hexdigest(), "note": "chunked"}
