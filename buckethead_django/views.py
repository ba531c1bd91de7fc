"""Views: the health check, and the signed, expiring file links `BucketHeadStorage.url()` makes."""

from __future__ import annotations

import os
import time
from typing import Any

from django.apps import apps
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from . import runtime
from .conf import get_settings
from .engine import ObjectNotFound
from .health import FAILING, UNAVAILABLE, engine_health
from .runtime import get_buckethead
from .storage import SignedName, file_grant

#: What anyone may see, for uptime monitors: how the process is doing and how old the bucket's copy of its data is.
PUBLIC_HEALTH_FIELDS = ("status", "last_upload_age_seconds", "last_good_snapshot_age_seconds", "replica_lag_seconds")


@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """The host's health as JSON, for uptime monitors: ``ok``, ``degraded`` (200), ``failing`` or ``lagging`` (503).

    Every process of the host answers the same: a member reports what the
    host's replicator announced. ``degraded`` means the last flush failed
    (the site works from the host's database and the change stays pending;
    ``last_upload_age_seconds`` says how old the bucket's copy is), or that
    copies of the host's database were set aside when it started (they hold
    changes the bucket does not have). ``failing`` means there is no engine
    (it could not start), or that this host was fenced off: another host
    took the bucket over, so nothing changed here reaches the bucket any
    more. On a read replica, ``replica_lag_seconds`` says how long ago it
    last found the bucket held nothing newer than what it serves, and
    ``lagging`` that this is longer than ``REPLICA_MAX_LAG``.

    The status and the ages are public. The details (the errors and the
    fence, which name the bucket and its endpoint, the current snapshot, the
    set-aside copies, this process's role and the host's replicator) are
    shown as ``BUCKETHEAD['HEALTH_DETAILS']`` allows: by default to staff
    users only.
    """
    try:
        engine = get_buckethead()
    except Exception as exc:  # noqa: BLE001 - any reason the engine cannot run is reported, not raised
        body: dict[str, Any] = {
            "status": FAILING,
            "last_upload_age_seconds": None,
            "last_good_snapshot_age_seconds": None,
            "replica_lag_seconds": None,
            "role": None,
            "process": str(runtime.role()),
            "pid": os.getpid(),
            "error": str(exc),
        }
        return _health_response(request, body)
    health = engine_health(engine)
    body = {
        **health.as_json(),
        "process": str(runtime.role()),
        "pid": os.getpid(),
        "read_only": engine.read_only,
        "read_only_reason": engine.read_only_reason,
        "last_flush": engine.last_flush.reason if engine.last_flush else None,
        "pending_changes": False if engine.read_only else engine.dirty,
    }
    if health.status == FAILING:
        body["error"] = health.fenced
    return _health_response(request, body)


def _health_response(request: HttpRequest, body: dict[str, Any]) -> JsonResponse:
    """``body``, cut down to the public fields unless the request may see the details; never cached."""
    if not shows_health_details(request):
        body = {field: body[field] for field in PUBLIC_HEALTH_FIELDS}
    response = JsonResponse(body, status=503 if body["status"] in UNAVAILABLE else 200)
    patch_cache_control(response, no_store=True)
    return response


def shows_health_details(request: HttpRequest) -> bool:
    """Whether ``request`` may see the health details: ``HEALTH_DETAILS`` 'public', or 'staff' and a staff user."""
    who = get_settings()["HEALTH_DETAILS"]
    if who != "staff":
        return who == "public"
    if not apps.is_installed("django.contrib.auth"):
        return False
    user = getattr(request, "user", None)  # lazy: loading it reads the session
    try:
        return bool(getattr(user, "is_active", False) and getattr(user, "is_staff", False))
    except Exception:  # noqa: BLE001 - sessions kept in a failing cache or database must not fail the health check
        return False


@require_safe
def serve_file(request: HttpRequest, token: str, filename: str) -> FileResponse:
    """Stream the blob a valid, unexpired token grants; 403 for a bad or expired token, 404 for no file.

    A token names a blob, or (for a name that had no file when `url()` was
    called) a name, looked up now: 404 while it has no file.

    The response is sandboxed (``Content-Security-Policy: sandbox``, no MIME
    sniffing) because it serves uploaded content from the site's own origin:
    an uploaded HTML or SVG file must not run script with the site's cookies.
    """
    try:
        grant = file_grant(token)
    except signing.BadSignature as exc:
        raise PermissionDenied(f"invalid or expired file link: {exc}") from exc
    if filename != grant.filename:
        raise PermissionDenied("the file link was altered")
    files = get_buckethead().files
    if isinstance(grant, SignedName):
        named = files.resolve(grant.name)
        if named is None:
            raise Http404("no file has this name")
        bh_key, content_type = named.bh_key, named.content_type or "application/octet-stream"
    else:
        bh_key, content_type = grant.bh_key, grant.content_type
    if not files.exists(bh_key):
        raise Http404("the file no longer exists")  # deleted: its object only waits for the next snapshot
    try:
        stream = files.open(bh_key)
    except ObjectNotFound:
        raise Http404("the file no longer exists") from None
    response = FileResponse(stream, content_type=content_type, filename=grant.filename)
    response["ETag"] = f'"{bh_key}"'
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    if isinstance(grant, SignedName):
        patch_cache_control(response, private=True, no_cache=True)  # the name may hold other content later
    else:
        patch_cache_control(response, private=True, max_age=max(0, grant.expires_at - int(time.time())))
    return response
