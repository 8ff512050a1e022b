"""A Django project as ``django-admin startproject`` makes it, served as ASGI
(``project.asgi:application``), driven through the admin as a person would:
log in with the CSRF and session cookies, add a group, log out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.frameworks.asgi_matrix import (SERVER_KINDS, TEST_TIMEOUT, Served, serving,
                                          server_log_stays_clean)  # noqa: F401 (autouse)

pytest.importorskip("django", reason="django comes with the test extra")

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery-staple-42"
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new project with its database migrated and a superuser, made by Django's own commands."""
    where = tmp_path_factory.mktemp("django_asgi")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for command in ([str(bin_dir / "django-admin"), "startproject", "project", "."],
                    [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
                    [sys.executable, "manage.py", "createsuperuser", "--noinput",
                     "--username", ADMIN_USER, "--email", "admin@example.com"]):
        subprocess.run(command, cwd=where, env=env, check=True, capture_output=True, timeout=120)
    return where


@pytest.fixture(scope="module", params=SERVER_KINDS, ids=str)
def server(request: pytest.FixtureRequest, django_project: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(request.param, "project.asgi:application", cwd=django_project) as process:
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
        "csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": "wrong",
        "next": "/admin/"})
    assert wrong.status_code == 200
    assert "Please enter the correct username and password" in wrong.text
    logged_in = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": csrf_token(wrong), "username": ADMIN_USER,
        "password": ADMIN_PASSWORD, "next": "/admin/"})
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
