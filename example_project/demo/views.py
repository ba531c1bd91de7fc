from __future__ import annotations

import time

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_page

from buckethead_django import get_buckethead

from .forms import DocumentForm
from .models import Document


def index(request: HttpRequest) -> HttpResponse:
    """A visit counter in the cache, and files uploaded through the storage."""
    if request.method == "POST":
        form = DocumentForm(request.POST, request.FILES)
        if form.is_valid():
            form.save()
            return redirect("index")
    else:
        form = DocumentForm()
    if get_buckethead().replica:  # a read replica (BUCKETHEAD_ROLE=replica) shows the count; the writer counts
        visits = cache.get("visits", 0)
    else:
        cache.add("visits", 0, timeout=None)
        visits = cache.incr("visits")
    return render(request, "demo/index.html", {"visits": visits, "form": form, "documents": Document.objects.all()})


@cache_page(60)
def cached_report(request: HttpRequest) -> HttpResponse:
    """A page Django's per-view cache serves from BucketHead for a minute."""
    return render(request, "demo/cached.html", {"rendered_at": time.time()})
