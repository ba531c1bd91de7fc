from __future__ import annotations

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render

from .engine import get_engine


def index(request: HttpRequest) -> HttpResponse:
    bh = get_engine()
    if request.method == "POST" and request.FILES.get("upload"):
        upload = request.FILES["upload"]
        bh.files.put(upload.file, filename=upload.name, mime=upload.content_type)
        return HttpResponseRedirect("/")
    visits = int(bh.kv.get("demo:visits", "0") or 0) + 1
    bh.kv.set("demo:visits", str(visits))
    context = {
        "visits": visits,
        "files": bh.files.list(limit=20),
        "bucket": bh.store.describe(),
        "last_flush": bh.last_flush,
    }
    return render(request, "demo/index.html", context)


def download(request: HttpRequest, bh_key: str) -> FileResponse:
    bh = get_engine()
    info = bh.files.head(bh_key)
    if info is None:
        raise Http404("no such file")
    return FileResponse(
        bh.files.open(bh_key), as_attachment=True, filename=info.filename or bh_key, content_type=info.mime
    )
