"""Routes of the minimal Django project: a sync view and an async one."""

import asyncio
import os

from django.http import HttpRequest, JsonResponse
from django.urls import path


def index(request: HttpRequest) -> JsonResponse:
    # request.META["wsgi.version"] is there only when served over WSGI.
    interface = "wsgi" if "wsgi.version" in request.META else "asgi"
    return JsonResponse({"message": "Hello from Django!", "interface": interface,
                         "worker": os.getpid(), "secure": request.is_secure()})


async def slow(request: HttpRequest) -> JsonResponse:
    # Over ASGI this waits on the worker's event loop without a thread;
    # over WSGI Django runs it in an event loop of its own.
    await asyncio.sleep(float(request.GET.get("seconds", "0.1")))
    return JsonResponse({"slept": True})


urlpatterns = [
    path("", index),
    path("slow", slow),
]
