"""Send writes made on a read replica to the writer host's application.

A read replica (``ROLE = "replica"``) serves reads from its copy of the
bucket and refuses every write with `ReadOnlyError`. Django's database
routers choose among the databases of one process, and a replica has no
writable database to choose, so writes are sent on at the HTTP level:

- with ``WRITER_URL`` set (the writer host's public address), a request
  with an unsafe method (POST, PUT, PATCH, DELETE) is redirected there with
  ``307 Temporary Redirect`` before its view runs: the browser or client
  repeats it, method and body, on the writer. A safe request whose view
  writes anyway (a session saved on a GET, say) is redirected too.
- without it, a write is answered ``503 Service Unavailable`` with a page
  saying it must be made on the writer host, instead of a server error.

On the writer host the middleware does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBase

from .conf import get_settings
from .engine import ReadOnlyError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Seconds a client is told to wait before it retries a write refused without ``WRITER_URL``.
RETRY_AFTER_SECONDS = 60


class ReplicaWritesMiddleware:
    """On a read replica, redirect writes to ``WRITER_URL`` (307), or refuse them with a clear 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        settings = get_settings()
        self.replica = settings.replica
        self.writer_url = str(settings["WRITER_URL"] or "").rstrip("/")

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if self.replica and self.writer_url and request.method not in SAFE_METHODS:
            return self._to_writer(request)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if not self.replica or not isinstance(exception, ReadOnlyError):
            return None
        if self.writer_url:
            return self._to_writer(request)
        response = HttpResponse(
            f"{exception} This request writes, so it must be made on the writer host.",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    def _to_writer(self, request: HttpRequest) -> HttpResponse:
        response = HttpResponse(status=307)
        response["Location"] = self.writer_url + request.get_full_path()
        response["Cache-Control"] = "no-store"
        return response
