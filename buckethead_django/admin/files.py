"""The files: named files and blobs, to download or delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme

from ..engine import ObjectNotFound
from ..engine.interfaces import InvalidName, validate_name
from ..engine.interfaces.files import DEFAULT_MIME
from ..models import StoredFile
from ..storage import BucketHeadStorage
from . import show
from .base import BucketHeadAdmin, View


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
