"""Small requests for the server benchmarks: a cache read, a cache write, and who answered."""

import json
import os

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path

PAYLOAD = "x" * 200


def answer(body: str) -> HttpResponse:
    response = HttpResponse(body)
    response["X-Bench-Pid"] = str(os.getpid())
    return response


def get(request: HttpRequest) -> HttpResponse:
    return answer(str(cache.get("bench:key", ""))[:10])


def set_(request: HttpRequest) -> HttpResponse:
    cache.set("bench:key", PAYLOAD, timeout=None)
    return answer("ok")


def pid(request: HttpRequest) -> HttpResponse:
    """This worker's pid and role (v1 has one writer per process; the plain peer has none)."""
    role = "none"
    try:
        from buckethead_django import runtime

        role = str(getattr(runtime.get_buckethead(), "role", "writer"))
    except (ImportError, RuntimeError):
        pass
    except Exception as exc:  # noqa: BLE001 - the benchmark reports whatever the engine says
        role = f"error: {exc}"
    return HttpResponse(json.dumps({"pid": os.getpid(), "role": role}), content_type="application/json")


urlpatterns = [path("bench/get/", get), path("bench/set/", set_), path("bench/pid/", pid)]
