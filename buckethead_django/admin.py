"""The BucketHead section of Django's admin: dashboard, flush, snapshots, KV and files browsers.

Every page works on the live engine of the process that serves it
(`get_buckethead()`), so what an operator sees is what the site is using,
not a copy read from the bucket.

Who may do what:

* every active staff user may look at every page;
* ``buckethead_django.flush_buckethead`` allows "Flush now" and keeping a labelled snapshot;
* ``buckethead_django.manage_buckethead_data`` allows deleting KV entries and files;
* restoring a snapshot replaces the whole database, so it is for superusers only.

Buttons a user may not use are not shown, and posting to them anyway is
refused with 403. Each page is the changelist of an unmanaged model (see
`buckethead_django.models`), which is how the section appears in the admin
index, the nav sidebar and the breadcrumbs like any other app.

During a bucket outage every page still renders from memory, says that the
bucket cannot be reached and how old its copy is, and disables (with the
reason next to it) only what needs the bucket: flushing, keeping and
restoring snapshots, downloads. An action posted anyway ends in an admin
error message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST

from . import admin_views as show
from .engine import BucketHeadError, BucketSQLite, History, ObjectNotFound
from .engine.interfaces import InvalidName, validate_name
from .engine.interfaces.files import DEFAULT_MIME
from .management.display import parse_when
from .models import Dashboard, KVEntry, Snapshot, StoredFile
from .runtime import get_buckethead
from .storage import BucketHeadStorage

T = TypeVar("T")

FLUSH_PERMISSION = "buckethead_django.flush_buckethead"
MANAGE_DATA_PERMISSION = "buckethead_django.manage_buckethead_data"

View = Callable[..., HttpResponse]


def url_name(model: type[Model], view: str) -> str:
    """The URL name of one of the section's views, in the admin site's namespace."""
    return f"{model._meta.app_label}_{model._meta.model_name}_{view}"


class BucketHeadAdmin(admin.ModelAdmin):
    """One page of the section: an admin changelist that shows the engine instead of table rows.

    Django's add, change, delete and history views are not routed at all:
    there is no table behind the model.
    """

    list_per_page = 50

    # -- permissions -----------------------------------------------------------------

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Any active staff user may look; each action checks its own permission."""
        return bool(request.user.is_active and request.user.is_staff)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_flush_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(FLUSH_PERMISSION)

    def has_manage_data_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MANAGE_DATA_PERMISSION)

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def can_delete(self, request: HttpRequest) -> bool:
        """Whether to offer deleting KV entries and files: with the permission, in a process that writes."""
        return self.has_manage_data_permission(request) and not self.engine().read_only

    @staticmethod
    def require(allowed: bool) -> None:
        """403 unless ``allowed``: the buttons are hidden, but a hand-made request must fail too."""
        if not allowed:
            raise PermissionDenied

    # -- URLs ------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        """The changelist (this page) and the page's own views, each behind the admin's login and CSRF checks."""
        routes = [("", self.changelist_view, "changelist"), *self.extra_urls()]
        return [
            path(route, self.admin_site.admin_view(view), name=url_name(self.model, name))
            for route, view, name in routes
        ]

    def extra_urls(self) -> list[tuple[str, View, str]]:
        """``(route, view, name)`` of the page's views besides its changelist."""
        return []

    def url(self, view: str, *args: str, model: type[Model] | None = None, **query: str) -> str:
        """The URL of ``view`` of this page (or of ``model``'s page), with ``query`` as its query string."""
        url = reverse(f"admin:{url_name(model or self.model, view)}", args=args, current_app=self.admin_site.name)
        return f"{url}?{urlencode(query)}" if query else url

    # -- rendering, actions and logging ---------------------------------------------------

    def render(
        self,
        request: HttpRequest,
        template: str,
        title: str,
        context: dict[str, Any],
        *,
        subpage: bool = False,
        reads: show.BucketReads | None = None,
    ) -> TemplateResponse:
        """An admin page: the site's header, sidebar and breadcrumbs (a ``subpage`` links back to the changelist).

        Every page says at the top whether the engine is fenced or degraded
        and whether the bucket answers: a page that read nothing from it
        (``reads``) asks it once, so that it can say so too.
        """
        request.current_app = self.admin_site.name
        engine = self.engine()
        if reads is None:
            reads = show.BucketReads(engine)
        reads.probe()
        return TemplateResponse(
            request,
            f"buckethead_django/admin/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "section_url": self.url("changelist") if subpage else None,
                "bucket": show.bucket_state(engine, reads),
                **context,
            },
        )

    def engine(self) -> BucketSQLite:
        return get_buckethead()

    def reads(self) -> show.BucketReads:
        """This page's lookups in the bucket, bounded in time (see `admin_views.BucketReads`)."""
        return show.BucketReads(self.engine())

    def refuse(self, request: HttpRequest, what: str, reads: show.BucketReads, back: str) -> HttpResponseRedirect:
        """Back to ``back`` with an admin error: ``what`` needs the bucket, which did not answer."""
        self.message_user(request, f"{what} while the bucket cannot be reached: {reads.error}", messages.ERROR)
        return HttpResponseRedirect(back)

    def run(self, request: HttpRequest, action: Callable[[], T], success: Callable[[T], str]) -> T | None:
        """Run an engine action and report how it went as an admin message; None if it failed.

        The engine's errors say what went wrong and what to do, so they are shown as they are.
        """
        try:
            result = action()
        except (BucketHeadError, ValueError, FileExistsError) as exc:  # FileExistsError: a label already taken
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(request, success(result), messages.SUCCESS)
        return result

    def log(self, request: HttpRequest, flag: int, object_repr: str, message: str) -> None:
        """Record an action in the admin's history, which its "Recent actions" list shows."""
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type_id=ContentType.objects.get_for_model(self.model, for_concrete_model=False).pk,
            object_repr=object_repr[:200],
            action_flag=flag,
            change_message=message,
        )

    @staticmethod
    def paginate(request: HttpRequest, items: Any, per_page: int) -> tuple[Any, list[tuple[str, str | None, bool]]]:
        """The requested page of ``items`` (``?p=``) and its numbered links."""
        page = Paginator(items, per_page).get_page(request.GET.get("p"))
        return page, show.page_links(request, page)


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


@admin.register(StoredFile)
class StoredFileAdmin(BucketHeadAdmin):
    """The FileStore: named files (what the Django storage saved) and every blob, to download or delete."""

    def extra_urls(self) -> list[tuple[str, View, str]]:
        return [
            ("delete/", self.delete_name_view, "delete"),
            ("blobs/", self.blobs_view, "blobs"),
            ("blobs/<str:bh_key>/download/", self.download_view, "download"),
            ("blobs/<str:bh_key>/delete/", self.delete_blob_view, "delete_blob"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Named files whose name starts with ``?prefix=``, by name, a page at a time."""
        prefix = request.GET.get("prefix", "")
        storage = BucketHeadStorage()
        return self.files_page(
            request,
            "names",
            self.engine().files.list_names(prefix),
            lambda named: (
                named,
                named.created_at,
                show.storage_url(storage, named.name) or self.url("download", named.bh_key),
                self.url("delete", name=named.name),
            ),
            {"prefix": prefix, **(extra_context or {})},
        )

    def blobs_view(self, request: HttpRequest) -> HttpResponse:
        """Every stored blob, named or not, newest first, a page at a time."""
        return self.files_page(
            request,
            "blobs",
            show.BlobPages(self.engine().files),
            lambda info: (
                info,
                info.created_at,
                self.url("download", info.bh_key),
                self.url("delete_blob", info.bh_key),
            ),
            {},
        )

    def files_page(
        self,
        request: HttpRequest,
        showing: str,
        items: Any,
        describe: Callable[[Any], tuple[Any, float, str, str]],
        context: dict[str, Any],
    ) -> HttpResponse:
        """One page of ``items``, each described as (file, created at, download link, delete link)."""
        page, links = self.paginate(request, items, self.list_per_page)
        can_delete = self.can_delete(request)
        rows = []
        for item in page.object_list:
            file, created_at, download_url, delete_url = describe(item)
            rows.append((file, show.datetime_of(created_at), download_url, delete_url if can_delete else None))
        return self.render(
            request,
            "files.html",
            "Files",
            {
                "showing": showing,
                "page": page,
                "page_links": links,
                "rows": rows,
                "names_url": self.url("changelist"),
                "blobs_url": self.url("blobs"),
                **context,
            },
        )

    def download_view(self, request: HttpRequest, bh_key: str) -> HttpResponse:
        """Stream a blob as an attachment, so uploaded HTML or SVG never renders on the admin's origin.

        The blob is looked up in the bucket first, within the page's short
        timeouts: during an outage the answer is an admin error message on
        the page the link was on, not a long wait.
        """
        files = self.engine().files
        info = files.head(bh_key)
        if info is None:
            raise Http404("no such file")
        reads = self.reads()
        try:
            if reads.read(lambda store: store.head(info.object_key), None) is None and reads.error is None:
                raise ObjectNotFound(info.object_key)
            # The stream itself comes through the engine's client, whose timeouts suit a long download.
            stream = reads.read(lambda _: files.open(bh_key), None)
        except ObjectNotFound:
            raise Http404("the file's content is missing from the bucket") from None
        if stream is None:
            return self.refuse(request, f"“{info.filename or bh_key}” cannot be downloaded", reads, self.back(request))
        response = FileResponse(
            stream, as_attachment=True, filename=info.filename or bh_key, content_type=info.mime or DEFAULT_MIME
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox"
        return response

    def back(self, request: HttpRequest) -> str:
        """The page the request came from, if it is on this site; else the list of every blob."""
        referer = request.headers.get("referer", "")
        if url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return referer
        return self.url("blobs")

    def delete_name_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then delete one named file (``?name=``); its blob goes too when no other name uses it."""
        self.require(self.has_manage_data_permission(request))
        files = self.engine().files
        try:
            named = files.resolve(validate_name(request.GET.get("name", "")))
        except InvalidName:
            named = None
        back = self.url("changelist")
        if request.method == "POST":
            if named is None:
                self.message_user(request, "That file was already gone.", messages.WARNING)
            elif self.run(
                request,
                lambda: files.delete_name(named.name),
                lambda found: show.deleted_message("file", named.name, found),
            ):
                self.log(request, DELETION, named.name, f"Deleted the file (content {named.bh_key}).")
            return HttpResponseRedirect(back)
        if named is None:
            raise Http404("no such file")
        return self.render(
            request,
            "delete_confirmation.html",
            "Delete a file",
            {
                "kind": "file",
                "object_name": named.name,
                "file": {"size": named.size, "content_type": named.content_type, "bh_key": named.bh_key},
                "note": "Its content is deleted from the bucket too, unless another name uses it.",
                "cancel_url": back,
            },
            subpage=True,
        )

    def delete_blob_view(self, request: HttpRequest, bh_key: str) -> HttpResponse:
        """Confirm, then delete a blob and every name that refers to it."""
        self.require(self.has_manage_data_permission(request))
        files = self.engine().files
        info = files.head(bh_key)
        back = self.url("blobs")
        if request.method == "POST":
            if info is None:
                self.message_user(request, "That file was already gone.", messages.WARNING)
            elif self.run(
                request, lambda: files.delete(bh_key), lambda found: show.deleted_message("file", bh_key, found)
            ):
                self.log(request, DELETION, info.filename or bh_key, f"Deleted content {bh_key} and its names.")
            return HttpResponseRedirect(back)
        if info is None:
            raise Http404("no such file")
        return self.render(
            request,
            "delete_confirmation.html",
            "Delete a file",
            {
                "kind": "file",
                "object_name": info.filename or bh_key,
                "file": {"size": info.size, "content_type": info.mime, "bh_key": info.bh_key},
                "note": "Every name that refers to this content is deleted with it.",
                "cancel_url": back,
            },
            subpage=True,
        )
