"""A Django project from ``django-admin startproject``, served as WSGI, driven as its users drive it.

The admin login with the CSRF and session cookies, adding an object and
logging out; a ModelForm refused and then saved; a file upload read back
through ``FileResponse`` (``wsgi.file_wrapper``); a ``StreamingHttpResponse``
that reaches the client while the view is still producing it. Once per
server (clusterserve per dispatch mode, under wsgiref.validate, gunicorn).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid

import httpx
import pytest

from tests.frameworks.django_project import ADMIN_PASSWORD, ADMIN_USER
from tests.frameworks.servers import assert_files_closed, client, no_new_faults, serve

pytestmark = [pytest.mark.timeout(180), pytest.mark.http_path]

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# Above Django's FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): the upload goes to a temporary file.
UPLOAD_SIZE = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def site(server_kind, django_project):
    with serve(server_kind, django_project.wsgi_app, cwd=django_project.root, ready_path="/admin/") as server:
        yield server


@pytest.fixture
def browser(site):
    with client(site) as c, no_new_faults(site):
        yield c


def csrf_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    match = CSRF_INPUT.search(response.text)
    assert match, response.text
    return match.group(1)


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def log_in(browser: httpx.Client) -> None:
    login = browser.get("/admin/login/", params={"next": "/admin/"})
    token = csrf_token(login)
    assert "csrftoken" in browser.cookies
    response = browser.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": ADMIN_PASSWORD, "next": "/admin/"})
    assert (response.status_code, response.headers.get("location")) == (302, "/admin/"), response.text
    assert "sessionid" in browser.cookies


def test_admin_login_add_object_and_logout(browser, site):
    response = browser.get("/admin/")
    assert (response.status_code, response.headers["location"]) == (302, "/admin/login/?next=/admin/")

    # A wrong password: the form again, with Django's message.
    token = csrf_token(browser.get("/admin/login/?next=/admin/"))
    refused = browser.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": "wrong", "next": "/admin/"})
    assert refused.status_code == 200
    assert "Please enter the correct username and password" in refused.text
    assert "sessionid" not in browser.cookies

    log_in(browser)
    index = browser.get("/admin/")
    assert index.status_code == 200
    assert "Site administration" in index.text and "/admin/shop/product/" in index.text

    name = unique("Admin widget")
    token = csrf_token(browser.get("/admin/shop/product/add/"))
    added = browser.post("/admin/shop/product/add/", data={
        "csrfmiddlewaretoken": token, "name": name, "price": "9.99", "description": "", "_save": "Save"})
    assert (added.status_code, added.headers.get("location")) == (302, "/admin/shop/product/"), added.text
    changelist = browser.get("/admin/shop/product/")
    assert changelist.status_code == 200
    assert "was added successfully" in changelist.text and name in changelist.text

    token = csrf_token(browser.get("/admin/"))
    logged_out = browser.post("/admin/logout/", data={"csrfmiddlewaretoken": token})
    assert logged_out.status_code == 200
    assert "Logged out" in logged_out.text
    assert "sessionid" not in browser.cookies
    assert browser.get("/admin/").status_code == 302


def test_set_cookie_values_reach_the_client_without_surrounding_whitespace(browser):
    # Django's WSGI handler sends each value as " csrftoken=...": served, stripped (gunicorn's rule).
    response = browser.get("/admin/login/")
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    assert any(value.startswith("csrftoken=") for value in cookies), cookies
    assert all(value == value.strip(" \t") for value in cookies), cookies


def test_model_form_refused_then_saved(browser):
    token = csrf_token(browser.get("/shop/products/new/"))

    refused = browser.post("/shop/products/new/", data={"csrfmiddlewaretoken": token, "name": "", "price": "-3"})
    assert refused.status_code == 200
    assert "This field is required." in refused.text
    assert "Ensure this value is greater than or equal to 0." in refused.text

    name = unique("Widget")
    saved = browser.post("/shop/products/new/", data={
        "csrfmiddlewaretoken": token, "name": name, "price": "12.50", "description": "A widget."})
    assert saved.status_code == 302, saved.text
    assert re.fullmatch(r"/shop/products/\d+/", saved.headers["location"])
    detail = browser.get(saved.headers["location"])
    assert detail.status_code == 200
    assert f"<h1>{name}</h1>" in detail.text and "12.50" in detail.text

    duplicate = browser.post("/shop/products/new/", data={"csrfmiddlewaretoken": token, "name": name, "price": "1"})
    assert duplicate.status_code == 200
    assert "Product with this Name already exists." in duplicate.text


def test_post_without_the_csrf_token_is_forbidden(browser):
    browser.get("/shop/products/new/")
    assert "csrftoken" in browser.cookies
    forbidden = browser.post("/shop/products/new/", data={"name": unique("Sneaky"), "price": "1"})
    assert forbidden.status_code == 403
    assert "CSRF verification failed" in forbidden.text


def test_file_upload_then_download_through_file_response(browser, site, django_project):
    content = os.urandom(UPLOAD_SIZE)
    digest = hashlib.sha256(content).hexdigest()
    token = csrf_token(browser.get("/shop/documents/new/"))

    uploaded = browser.post("/shop/documents/new/", data={"csrfmiddlewaretoken": token, "title": "Report"},
                            files={"file": ("report.bin", content, "application/octet-stream")})
    assert uploaded.status_code == 302, uploaded.text
    detail = browser.get(uploaded.headers["location"])
    assert detail.status_code == 200
    assert f'<p class="size">{UPLOAD_SIZE}</p>' in detail.text
    assert f'<p class="sha256">{digest}</p>' in detail.text

    download_url = uploaded.headers["location"] + "download/"
    download = browser.get(download_url)
    assert download.status_code == 200
    assert download.headers["content-length"] == str(UPLOAD_SIZE)
    assert download.headers["content-disposition"].startswith('attachment; filename="report')
    assert hashlib.sha256(download.content).hexdigest() == digest

    head = browser.head(download_url)
    assert (head.status_code, head.headers["content-length"], head.content) == (200, str(UPLOAD_SIZE), b"")
    assert_files_closed(site, django_project.root / "media")


def test_streaming_response_reaches_the_client_while_it_is_produced(browser, django_project):
    name = uuid.uuid4().hex
    with browser.stream("GET", f"/shop/stream/{name}/") as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"
        lines = response.iter_lines()
        # The view waits for this file before it sends the rest: the first line came alone.
        assert next(lines) == "first line"
        (django_project.stream_signals / name).touch()
        rest = list(lines)
    assert rest == [f"line {n}" for n in range(100)] + ["signalled"]
