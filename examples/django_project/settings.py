"""Settings of a minimal Django project: no database, no installed apps.

Served by clusterserve from the repository's root, over WSGI or ASGI:

    pip install django
    clusterserve examples.django_project.wsgi:application -w 4 --threads 4
    clusterserve examples.django_project.asgi:application -w 4

A real project keeps its secrets out of the code: here they come from the
environment, with development defaults.
"""

import os

PACKAGE = __package__  # "examples.django_project" from the repository's root

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
# Health checks from inside a container or pod use 127.0.0.1 or localhost.
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = f"{PACKAGE}.urls"
WSGI_APPLICATION = f"{PACKAGE}.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}

# Behind a proxy that sets X-Forwarded-Proto (nginx, an ingress): with
# forwarded_allow_ips naming the proxy, clusterserve's WSGI worker already
# sets wsgi.url_scheme from it; Django's own setting covers ASGI and other
# servers. Only enable it behind a proxy that always sets the header.
if os.environ.get("DJANGO_BEHIND_PROXY") == "1":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

USE_TZ = True
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
