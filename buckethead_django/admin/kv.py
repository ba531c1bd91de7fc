"""The KV entries: search, read, add, edit and delete keys."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone

from ..models import KVEntry
from . import show
from .base import BucketHeadAdmin, View


@admin.register(KVEntry)
class KVEntryAdmin(BucketHeadAdmin):
    """The KV store: search keys by prefix, read values (text, a cache entry's value, or hex), add, edit and
    delete keys."""

    def extra_urls(self) -> list[tuple[str, View, str]]:
        return [
            ("entry/", self.entry_view, "entry"),
            ("add/", self.add_entry_view, "add"),
            ("edit/", self.edit_entry_view, "edit"),
            ("delete/", self.delete_entry_view, "delete"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Live keys starting with ``?prefix=``, sorted, a page at a time."""
        kv = self.engine().kv
        prefix = request.GET.get("prefix", "")
        page, links = self.paginate(request, kv.keys(prefix), self.list_per_page)
        can_delete = self.can_delete(request)
        back = {"prefix": prefix} if prefix else {}
        rows = [
            (row, self.url("entry", key=row.key), self.url("delete", key=row.key, **back) if can_delete else None)
            for row in show.kv_rows(kv, page.object_list)
        ]
        context = {"prefix": prefix, "page": page, "page_links": links, "rows": rows}
        return self.render(
            request,
            "kv_list.html",
            "KV entries",
            {**context, "add_url": self.url("add") if can_delete else None, **(extra_context or {})},
        )

    def entry_view(self, request: HttpRequest) -> HttpResponse:
        """One key (``?key=``): its whole value, size and expiry."""
        row = self.live_row(request)
        can_change = self.can_delete(request)
        return self.render(
            request,
            "kv_entry.html",
            row.key,
            {
                "row": row,
                "delete_url": self.url("delete", key=row.key) if can_change else None,
                "edit_url": self.url("edit", key=row.key) if can_change and row.value.editable else None,
            },
            subpage=True,
        )

    def add_entry_view(self, request: HttpRequest) -> HttpResponse:
        """A form for a new key with a text value (and an optional time to live)."""
        self.require(self.can_delete(request))
        form = show.KVEntryForm(request.POST if request.method == "POST" else None)
        kv = self.engine().kv
        if form.is_valid():
            key = form.cleaned_data["key"]
            if kv.get_bytes(key) is not None:
                form.add_error("key", f"The key “{key}” exists already: edit it instead.")
            elif self.save_entry(request, form, ADDITION, "Added the KV entry."):
                return HttpResponseRedirect(self.url("entry", key=key))
        return self.render(request, "kv_form.html", "Add a KV entry", {"form": form, "adding": True}, subpage=True)

    def edit_entry_view(self, request: HttpRequest) -> HttpResponse:
        """A form to change a key's text value and time to live; other values change through their own API."""
        self.require(self.can_delete(request))
        row = self.live_row(request)
        if not row.value.editable:
            self.message_user(request, show.NOT_EDITABLE, messages.ERROR)
            return HttpResponseRedirect(self.url("entry", key=row.key))
        ttl = None if row.expires_at is None else max(1, round((row.expires_at - timezone.now()).total_seconds()))
        initial = {"key": row.key, "value": row.value.shown, "ttl": ttl}
        form = show.KVEntryForm(request.POST if request.method == "POST" else None, initial=initial, editing=True)
        if form.is_valid() and self.save_entry(request, form, CHANGE, "Changed the KV entry's value."):
            return HttpResponseRedirect(self.url("entry", key=row.key))
        return self.render(request, "kv_form.html", f"Edit {row.key}", {"form": form, "row": row}, subpage=True)

    def save_entry(self, request: HttpRequest, form: show.KVEntryForm, flag: int, logged: str) -> bool:
        """Set the form's key to its value in the host's database; whether it was (the message says why not)."""
        key, value, ttl = (form.cleaned_data[f] for f in ("key", "value", "ttl"))
        kv = self.engine().kv
        done = self.run(request, lambda: kv.set(key, value, ttl=ttl) or True, lambda _: f"Saved the KV entry “{key}”.")
        if done:
            self.log(request, flag, key, logged)
        return bool(done)

    def delete_entry_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then delete one key (``?key=``)."""
        self.require(self.has_manage_data_permission(request))
        back = self.url("changelist", **({"prefix": request.GET["prefix"]} if request.GET.get("prefix") else {}))
        if request.method == "POST":
            key = request.GET.get("key")
            if key is None:
                raise Http404("no key given")
            kv = self.engine().kv
            if self.run(request, lambda: kv.delete(key), lambda found: show.deleted_message("KV entry", key, found)):
                self.log(request, DELETION, key, "Deleted the KV entry.")
            return HttpResponseRedirect(back)
        row = self.live_row(request)
        return self.render(
            request,
            "delete_confirmation.html",
            "Delete a KV entry",
            {"kind": "KV entry", "object_name": row.key, "kv_row": row, "cancel_url": back},
            subpage=True,
        )

    def live_row(self, request: HttpRequest) -> show.KVRow:
        """The row of the key ``?key=`` names, whole; 404 if it is not live."""
        key = request.GET.get("key")
        rows = show.kv_rows(self.engine().kv, [key], full=True) if key is not None else []
        if not rows:
            raise Http404("no such key: it may have expired or been deleted")
        return rows[0]
