"""The snapshots: every restorable point and label; restore one, or keep the current state."""

from __future__ import annotations

import time
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_POST

from ..engine import BucketSQLite, History
from ..management.display import parse_when
from ..models import Snapshot
from . import show
from .base import BucketHeadAdmin, View


@admin.register(Snapshot)
class SnapshotAdmin(BucketHeadAdmin):
    """The restorable snapshots in the bucket: restore one, or keep the current state under a label."""

    def extra_urls(self) -> list[tuple[str, View, str]]:
        return [("restore/", self.restore_view, "restore"), ("keep/", require_POST(self.keep_view), "keep")]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        bh = self.engine()
        reads = self.reads()
        can_restore = self.has_restore_permission(request) and not bh.read_only and bh.fenced is None
        entries = reads.read(lambda store: History(store, bh.config.key).snapshots(), [])
        page, links = self.paginate(request, entries, self.list_per_page)
        snapshots = [(entry, self.url("restore", name=entry.name) if can_restore else None) for entry in page]
        return self.render(
            request,
            "snapshots.html",
            "Snapshots",
            {
                "snapshots": snapshots,
                "page": page,
                "page_links": links,
                "restore_at_url": self.url("restore") if can_restore and entries else None,
                "snapshot_key": bh.config.key,
                "retention": show.retention(bh.snapshot_config),
                "can_keep": self.has_flush_permission(request) and not bh.read_only and bh.fenced is None,
                "fenced": bh.fenced,
                "keep_url": self.url("keep"),
                **(extra_context or {}),
            },
            reads=reads,
        )

    def restore_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then replace the live database with a snapshot (the current state is kept as one first)."""
        self.require(self.has_restore_permission(request))
        bh = self.engine()
        reads = self.reads()
        name = request.GET.get("name", "")
        if "at" in request.GET:
            return self.restore_at(request, bh, reads)
        try:
            entry = reads.read(lambda store: History(store, bh.config.key).find(name), None)
        except KeyError:
            raise Http404(f"there is no snapshot named {name!r}") from None
        if entry is None:
            if request.method == "POST":
                return self.refuse(request, f"The snapshot “{name}” cannot be restored", reads, self.url("changelist"))
            return self.render(
                request,
                "restore_confirmation.html",
                "Restore a snapshot",
                {"entry": None, "asked": name, "confirm_url": self.url("restore", name=name)},
                subpage=True,
                reads=reads,
            )
        if request.method == "POST":
            kept = self.run(
                request, lambda: bh.restore(entry.name), lambda kept: show.restore_message(entry.name, kept)
            )
            if kept is not None:
                self.log(
                    request, CHANGE, entry.name, f"Restored snapshot {entry.name}; the state before is {kept.name}."
                )
            return HttpResponseRedirect(self.url("changelist"))
        return self.render(
            request,
            "restore_confirmation.html",
            "Restore a snapshot",
            # Confirming restores exactly what was shown, even if `previous` moves on meanwhile.
            {"entry": entry, "asked": name, "confirm_url": self.url("restore", name=entry.name)},
            subpage=True,
            reads=reads,
        )

    def restore_at(self, request: HttpRequest, bh: BucketSQLite, reads: show.BucketReads) -> HttpResponse:
        """Send the operator on to confirm the newest point flushed at or before ``?at=`` (a time or an age)."""
        asked = request.GET["at"]
        try:
            when = parse_when(asked, now=time.time())
            entry = reads.read(lambda store: History(store, bh.config.key).find_at(when), None)
        except (ValueError, KeyError) as exc:
            why = str(exc) if isinstance(exc, ValueError) else "no restorable point was flushed at or before it"
        else:
            if entry is not None:
                return HttpResponseRedirect(self.url("restore", name=entry.name))
            why = "the bucket cannot be reached"
        messages.error(request, f"Cannot restore the state at “{asked}”: {why}.")
        return HttpResponseRedirect(self.url("changelist"))

    def keep_view(self, request: HttpRequest) -> HttpResponse:
        """Flush, and keep the state under a label that later flushes never replace."""
        self.require(self.has_flush_permission(request))
        label = request.POST.get("label", "").strip()
        bh = self.engine()
        kept = self.run(
            request, lambda: bh.snapshot(label=label), lambda kept: f"Kept the current state as snapshot “{kept.name}”."
        )
        if kept is not None:
            self.log(request, ADDITION, kept.name, f"Kept the current state as snapshot {kept.name} ({kept.key}).")
        return HttpResponseRedirect(self.url("changelist"))
