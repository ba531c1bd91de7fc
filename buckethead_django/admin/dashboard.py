"""The dashboard: where the state is, when it was last flushed, who writes it, Flush now."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_POST

from ..models import Dashboard, KVEntry, Snapshot, StoredFile
from . import show
from .base import BucketHeadAdmin, View


@admin.register(Dashboard)
class DashboardAdmin(BucketHeadAdmin):
    """Where the state is, when it was last flushed, how big it is, who writes it, and whether all is well.

    A process fenced off by another writer, or whose flushes fail, says so
    at the top of the page: its changes are not reaching the bucket.
    """

    def extra_urls(self) -> list[tuple[str, View, str]]:
        return [("flush/", require_POST(self.flush_view), "flush")]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        bh = self.engine()
        reads = self.reads()
        return self.render(
            request,
            "dashboard.html",
            "BucketHead",
            {
                "config": bh.config,
                "last_flush": show.flush_summary(bh.last_flush),
                "last_error": bh.last_error,
                "dirty": bh.dirty,
                "restored_from": bh.restored_from,
                "stats": bh.stats(),
                "writer": show.writer_status(bh, reads),
                "can_flush": self.has_flush_permission(request) and not bh.read_only and bh.fenced is None,
                "flush_url": self.url("flush"),
                "kv_url": self.url("changelist", model=KVEntry),
                "files_url": self.url("changelist", model=StoredFile),
                "snapshots_url": self.url("changelist", model=Snapshot),
                **(extra_context or {}),
            },
            reads=reads,
        )

    def flush_view(self, request: HttpRequest) -> HttpResponse:
        """Snapshot the database to the bucket now, whatever the flush interval."""
        self.require(self.has_flush_permission(request))
        bh = self.engine()
        self.run(request, bh.force_flush, lambda result: show.flush_message(result, bh.store.describe()))
        return HttpResponseRedirect(self.url("changelist"))
