"""A Django project made as a user makes one: ``django-admin startproject``, ``manage.py startapp``.

The generated files are kept as Django wrote them; the ``shop`` app gets the
models, forms, views, templates and admin of tests/frameworks/apps/django_shop,
and the project's settings and URLconf get a few lines appended. Then
``manage.py makemigrations``, ``migrate`` and ``createsuperuser --noinput``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SHOP_SOURCES = Path(__file__).resolve().parent / "apps" / "django_shop"
PROJECT = "mysite"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery-staple"

SETTINGS_ADDITIONS = """
INSTALLED_APPS += ["shop"]
MEDIA_ROOT = BASE_DIR / "media"
# Where the shop's streaming view waits for its go-ahead (see shop.views.stream).
STREAM_SIGNALS = BASE_DIR / "signals"
"""

URLS_ADDITIONS = """
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include

urlpatterns += [path("shop/", include("shop.urls"))]
# The admin's CSS and JavaScript, served by the app itself while DEBUG is on (as generated).
urlpatterns += staticfiles_urlpatterns()
"""


@dataclass(frozen=True)
class DjangoProject:
    root: Path

    @property
    def wsgi_app(self) -> str:
        return f"{PROJECT}.wsgi:application"

    @property
    def stream_signals(self) -> Path:
        return self.root / "signals"


def generate(where: Path) -> DjangoProject:
    """Make the project in ``where`` (which must not exist yet), migrated, with a superuser."""
    where.mkdir(parents=True)
    django_admin = Path(sys.executable).with_name("django-admin")
    run([str(django_admin), "startproject", PROJECT, str(where)], cwd=where)
    manage = [sys.executable, "manage.py"]
    run([*manage, "startapp", "shop"], cwd=where)
    app_dir = where / "shop"
    for source in ("models.py", "forms.py", "views.py", "urls.py", "admin.py"):
        shutil.copy(SHOP_SOURCES / source, app_dir / source)
    shutil.copytree(SHOP_SOURCES / "templates", app_dir / "templates")
    append(where / PROJECT / "settings.py", SETTINGS_ADDITIONS)
    append(where / PROJECT / "urls.py", URLS_ADDITIONS)
    (where / "signals").mkdir()
    run([*manage, "makemigrations", "shop"], cwd=where)
    run([*manage, "migrate", "--noinput"], cwd=where)
    run([*manage, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com"],
        cwd=where, env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
    return DjangoProject(where)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(command, cwd=cwd, env={**environ, **(env or {})}, capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
