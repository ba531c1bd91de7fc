"""What every page of the BucketHead admin section shares: its URLs, rendering, permissions and messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import urlencode

from ..engine import BucketHeadError, BucketSQLite
from ..runtime import get_buckethead
from . import show

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
        """This page's lookups in the bucket, bounded in time (see `show.BucketReads`)."""
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
