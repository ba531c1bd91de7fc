"""Views: the health check, and the signed, expiring file links `BucketHeadStorage.url()` makes locally."""

from __future__ import annotations

import time

from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from . import runtime
from .engine import ObjectNotFound
from .health import FAILING, engine_health
from .runtime import get_buckethead
from .storage import SignedBlob


@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """The engine's health as JSON, for uptime monitors: ``ok``, ``degraded`` (200) or ``failing`` (503).

    ``degraded`` means the last flush failed: the site works from memory and
    the change stays pending; ``last_upload_age_seconds`` says how old the
    bucket's copy is. ``failing`` means there is no engine (it could not
    start), or that this process was fenced off: another writer took the
    bucket over, so nothing changed here reaches the bucket any more
    (``fenced`` says why). ``current_snapshot`` names the generation the
    bucket's current state is, as far as this process knows.
    """
    try:
        engine = get_buckethead()
    except Exception as exc:  # noqa: BLE001 - any reason the engine cannot run is reported, not raised
        response = JsonResponse({"status": FAILING, "role": str(runtime.role()), "error": str(exc)}, status=503)
        patch_cache_control(response, no_store=True)
        return response
    health = engine_health(engine)
    body = {
        **health.as_json(),
        "role": str(runtime.role()),
        "read_only": engine.read_only,
        "last_flush": engine.last_flush.reason if engine.last_flush else None,
        "pending_changes": False if engine.read_only else engine.dirty,
    }
    if health.status == FAILING:
        body["error"] = health.fenced
    response = JsonResponse(body, status=503 if health.status == FAILING else 200)
    patch_cache_control(response, no_store=True)
    return response


@require_safe
def serve_file(request: HttpRequest, token: str, filename: str) -> FileResponse:
    """Stream the blob a valid, unexpired token names; 403 for a bad or expired token.

    The response is sandboxed (``Content-Security-Policy: sandbox``, no MIME
    sniffing) because it serves uploaded content from the site's own origin:
    an uploaded HTML or SVG file must not run script with the site's cookies.
    """
    try:
        grant = SignedBlob.from_token(token)
    except signing.BadSignature as exc:
        raise PermissionDenied(f"invalid or expired file link: {exc}") from exc
    if filename != grant.filename:
        raise PermissionDenied("the file link was altered")
    files = get_buckethead().files
    if not files.exists(grant.bh_key):
        raise Http404("the file no longer exists")  # deleted: its object only waits for the next snapshot
    try:
        stream = files.open(grant.bh_key)
    except ObjectNotFound:
        raise Http404("the file no longer exists") from None
    response = FileResponse(stream, content_type=grant.content_type, filename=grant.filename)
    response["ETag"] = f'"{grant.bh_key}"'
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    patch_cache_control(response, private=True, max_age=max(0, grant.expires_at - int(time.time())))
    return response
