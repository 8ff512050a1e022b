"""A Bottle app (tests/frameworks/apps/bottle_guestbook.py), driven as its users drive it.

Signing the guestbook (a refused form, a redirect after POST, escaped
output), a signed cookie that a tampered copy cannot pass, ``static_file``
whole, conditional and ranged, an upload through ``request.files``, a JSON
route and the app's own 404 page. Once per server (clusterserve per dispatch
mode, under wsgiref.validate, gunicorn).
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.frameworks.servers import assert_files_closed, client, no_new_faults, serve

pytestmark = [pytest.mark.timeout(180), pytest.mark.http_path]

APP = "tests.frameworks.apps.bottle_guestbook:app"
STATIC = os.urandom(512 * 1024)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    data = tmp_path_factory.mktemp("bottle")
    (data / "files").mkdir()
    (data / "files" / "photo.jpg").write_bytes(STATIC)
    return data


@pytest.fixture(scope="module")
def site(server_kind, files):
    env = {"GUESTBOOK_DB": str(files / "guestbook.sqlite3"), "GUESTBOOK_FILES": str(files / "files")}
    with serve(server_kind, APP, env=env) as server:
        yield server


@pytest.fixture
def browser(site):
    with client(site) as c, no_new_faults(site):
        yield c


def test_sign_the_guestbook_and_come_back_recognised(browser):
    name = f"eve-{uuid.uuid4().hex[:8]}"
    refused = browser.post("/sign", data={"name": name, "message": ""})
    assert refused.status_code == 400
    assert "Both a name and a message, please." in refused.text

    signed = browser.post("/sign", data={"name": name, "message": "<b>hi</b> there"})
    assert (signed.status_code, signed.headers["location"]) == (303, str(signed.url.join("/")))
    page = browser.get("/")
    assert f'<p class="welcome">Welcome back, {name}!</p>' in page.text
    assert f"<li><b>{name}</b>: &lt;b&gt;hi&lt;/b&gt; there</li>" in page.text
    assert {"name": name, "message": "<b>hi</b> there"} in browser.get("/api/entries").json()["entries"]

    # A cookie changed by the client fails Bottle's signature check: no welcome.
    browser.cookies.set("visitor", browser.cookies["visitor"].replace("!", "!x", 1))
    assert "Welcome back" not in browser.get("/").text


def test_static_file_whole_conditional_ranged_and_head(browser, site, files):
    whole = browser.get("/static/photo.jpg")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "image/jpeg"
    assert whole.headers["content-length"] == str(len(STATIC))
    assert whole.content == STATIC

    not_modified = browser.get("/static/photo.jpg", headers={"If-Modified-Since": whole.headers["last-modified"]})
    assert (not_modified.status_code, not_modified.content) == (304, b"")

    ranged = browser.get("/static/photo.jpg", headers={"Range": "bytes=-100"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes {len(STATIC) - 100}-{len(STATIC) - 1}/{len(STATIC)}"
    assert ranged.content == STATIC[-100:]

    head = browser.head("/static/photo.jpg")
    assert (head.status_code, head.headers["content-length"], head.content) == (200, str(len(STATIC)), b"")
    assert_files_closed(site, files / "files")


def test_upload_through_request_files_then_served_as_static(browser):
    content = os.urandom(1024 * 1024)
    name = f"upload-{uuid.uuid4().hex[:8]}.bin"
    saved = browser.post("/upload", files={"upload": (name, content, "application/octet-stream")})
    assert (saved.status_code, saved.json()) == (200, {"saved": name, "size": len(content)})
    assert browser.get(f"/static/{name}").content == content
    refused = browser.post("/upload", data={"nothing": "here"})
    assert (refused.status_code, refused.json()) == (400, {"error": "no file"})


def test_unknown_path_gets_the_apps_404_page(browser):
    response = browser.get("/no/such/page")
    assert response.status_code == 404
    assert '<p class="missing">Nothing at /no/such/page.</p>' in response.text
