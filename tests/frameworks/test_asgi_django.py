"""The Django project of the matrix (tests/frameworks/django_project.py: made by
``django-admin startproject``), served as ASGI from the ``asgi.py`` Django wrote,
driven through the admin as a person would: log in with the CSRF and session
cookies, add a group, log out; a file upload read back through ``FileResponse``, and
the admin's stylesheet (the generated project's ``shop`` app and static URLs).

The shop's ``StreamingHttpResponse`` is left out here: its iterator is synchronous,
and Django's ASGI handler reads such an iterator to the end before it sends a byte
(on any ASGI server; Django warns so)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.frameworks import django_project as project
from tests.frameworks.asgi_matrix import (
    SERVER_KINDS,
    TEST_TIMEOUT,
    Served,
    server_log_stays_clean,  # noqa: F401 (autouse)
    serving,
)

pytest.importorskip("django", reason="django comes with the test extra")

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module", params=SERVER_KINDS, ids=str)
def server(request: pytest.FixtureRequest, django_project: project.DjangoProject,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The project's ASGI entry point, as generated (the conftest's ``django_project``)."""
    app = f"{project.PROJECT}.asgi:application"
    with serving(request.param, app, cwd=django_project.root) as process:
        yield Served(request.param, process, tmp_path_factory.mktemp("records"))


def csrf_token(page: httpx.Response) -> str:
    assert page.status_code == 200, (page.status_code, page.text[:500])
    match = CSRF_INPUT.search(page.text)
    assert match, page.text[:2000]
    return match.group(1)


def log_in(client: httpx.Client) -> None:
    redirect = client.get("/admin/")
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "/admin/login/?next=/admin/"
    token = csrf_token(client.get("/admin/login/?next=/admin/"))
    assert "csrftoken" in client.cookies
    wrong = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token, "username": project.ADMIN_USER, "password": "wrong",
        "next": "/admin/"})
    assert wrong.status_code == 200
    assert "Please enter the correct username and password" in wrong.text
    logged_in = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": csrf_token(wrong), "username": project.ADMIN_USER,
        "password": project.ADMIN_PASSWORD, "next": "/admin/"})
    assert logged_in.status_code == 302, logged_in.text[:2000]
    assert logged_in.headers["location"] == "/admin/"
    assert "sessionid" in client.cookies
    index = client.get("/admin/")
    assert index.status_code == 200
    assert "Site administration" in index.text and "Groups" in index.text


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connections"])
def test_asgi_django_admin_login_add_group_logout(server: Served, keep_alive: bool) -> None:
    group = f"editors {server.kind} {'ka' if keep_alive else 'nc'}"
    with server.client(keep_alive=keep_alive) as client:
        log_in(client)

        form = client.get("/admin/auth/group/add/")
        added = client.post("/admin/auth/group/add/", data={
            "csrfmiddlewaretoken": csrf_token(form), "name": group, "_save": "Save"})
        assert added.status_code == 302, added.text[:2000]
        assert added.headers["location"] == "/admin/auth/group/"
        listing = client.get("/admin/auth/group/")
        assert listing.status_code == 200
        assert group in listing.text
        assert "was added successfully" in listing.text  # the messages framework's cookie

        # The same form again: the name is taken, and the form says so.
        duplicate = client.post("/admin/auth/group/add/", data={
            "csrfmiddlewaretoken": csrf_token(client.get("/admin/auth/group/add/")),
            "name": group, "_save": "Save"})
        assert duplicate.status_code == 200
        assert "Group with this Name already exists." in duplicate.text

        # A POST without the CSRF token is refused, session or not.
        forged = client.post("/admin/auth/group/add/", data={"name": "forged", "_save": "Save"})
        assert forged.status_code == 403
        assert "CSRF verification failed" in forged.text

        logout_token = csrf_token(client.get("/admin/password_change/"))
        logged_out = client.post("/admin/logout/", data={"csrfmiddlewaretoken": logout_token})
        assert logged_out.status_code == 200
        assert "Logged out" in logged_out.text
        assert "sessionid" not in client.cookies
        after = client.get("/admin/auth/group/")
        assert after.status_code == 302
        assert after.headers["location"].startswith("/admin/login/")


def test_asgi_django_upload_then_download_through_file_response(server: Served) -> None:
    content = os.urandom(3 * 1024 * 1024)  # above FILE_UPLOAD_MAX_MEMORY_SIZE: a temporary file
    digest = hashlib.sha256(content).hexdigest()
    with server.client() as client:
        uploaded = client.post("/shop/documents/new/", data={
            "csrfmiddlewaretoken": csrf_token(client.get("/shop/documents/new/")), "title": "Report"},
            files={"file": ("report.bin", content, "application/octet-stream")})
        assert uploaded.status_code == 302, uploaded.text[:2000]
        detail = client.get(uploaded.headers["location"])
        assert f'<p class="sha256">{digest}</p>' in detail.text
        download = client.get(uploaded.headers["location"] + "download/")
        assert download.status_code == 200
        assert download.headers["content-length"] == str(len(content))
        assert download.headers["content-disposition"].startswith('attachment; filename="report')
        assert hashlib.sha256(download.content).hexdigest() == digest


def test_asgi_django_admin_stylesheet(server: Served) -> None:
    import django.contrib.admin

    css = os.path.join(os.path.dirname(django.contrib.admin.__file__), "static/admin/css/base.css")
    with server.client() as client:
        login = client.get("/admin/login/")
        assert '/static/admin/css/base.css"' in login.text
        stylesheet = client.get("/static/admin/css/base.css")
        assert stylesheet.status_code == 200
        assert stylesheet.headers["content-type"].startswith("text/css")
        with open(css, "rb") as f:
            assert stylesheet.content == f.read()
