"""ASGI entry point: ``clusterserve examples.django_project.asgi:application``.

Django does not speak the ASGI lifespan protocol; clusterserve's default
``--lifespan auto`` notices and goes on without it.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{__package__}.settings")

application = get_asgi_application()
