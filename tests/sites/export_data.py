"""The data tests/test_export.py exports, and what it checks on the graduated site: ``seed()`` and ``check()``.

Both print one JSON object as their last line. Run them in a process of the
site: ``manage.py shell -c "import export_data; export_data.seed()"`` with
``DJANGO_SETTINGS_MODULE=export_site`` (the BucketHead site), and
``export_data.check(json)`` with ``graduated_site`` (PostgreSQL, Redis, S3).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from typing import Any

#: Users and their passwords.
USERS = {"admin": "pw-admin-1", "alice": "pw-alice-2", "bob": "pw-bob-3"}
#: Cache entries: key -> value (with the timeout set below); "short" has expired before any export.
TTL_SECONDS = 3600
REPORT = b"quarterly numbers\n" * 1000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _counts() -> dict[str, int]:
    """Rows per model (the auto-created many-to-many tables too), as the export counts them."""
    from django.apps import apps

    return {
        m._meta.label_lower: m._base_manager.count()
        for m in apps.get_models(include_auto_created=True)
        if m._meta.managed and not m._meta.proxy
    }


def seed() -> None:
    """Users, permissions, a group, documents with files, an admin log entry, cache entries and an application KV key.

    ``EXPORT_SEED_FILES=N`` adds N more documents, each with a file of ``EXPORT_SEED_FILE_KB`` KB of its own.
    """
    from demo.models import Document
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.contrib.auth.models import Group, Permission, User
    from django.contrib.contenttypes.models import ContentType
    from django.core.cache import cache
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from buckethead_django import get_buckethead

    # A site whose history differs from a fresh migrate: demo.document's content type and permissions were made
    # again, so their ids are not those `migrate` gives them in a new database.
    ContentType.objects.get_for_model(Document).delete()
    ContentType.objects.clear_cache()
    call_command("migrate", verbosity=0)

    admin = User.objects.create_superuser("admin", "admin@example.com", USERS["admin"])
    alice = User.objects.create_user("alice", password=USERS["alice"])
    bob = User.objects.create_user("bob", password=USERS["bob"])
    bob.user_permissions.add(Permission.objects.get(codename="add_document"))
    editors = Group.objects.create(name="editors")
    editors.permissions.add(Permission.objects.get(codename="change_document"))
    alice.groups.add(editors)

    contents = {
        "report.txt": REPORT,
        "copy-of-report.txt": REPORT,  # the same content under another name: one blob in BucketHead
        "photo.bin": os.urandom(300 * 1024),
        "big.bin": os.urandom(9 * 1024 * 1024),  # over boto3's multipart threshold (8 MiB)
    }
    extra, size = int(os.environ.get("EXPORT_SEED_FILES", "0")), int(os.environ.get("EXPORT_SEED_FILE_KB", "64"))
    contents.update({f"many/file-{i:04d}.bin": os.urandom(size * 1024) for i in range(extra)})
    documents = {}
    for filename, data in contents.items():
        doc = Document.objects.create(title=filename, file=ContentFile(data, name=filename))
        documents[doc.file.name] = {"id": doc.pk, "sha256": _sha(data), "size": len(data)}
    report = Document.objects.get(title="report.txt")
    LogEntry.objects.create(
        user=admin,
        content_type=ContentType.objects.get_for_model(Document),
        object_id=str(report.pk),
        object_repr=str(report),
        action_flag=ADDITION,
        change_message="Added.",
    )

    limit = get_buckethead().kv_max_value_bytes
    cache.set("plain", {"a": 1, "b": [1, 2]}, None)
    cache.set("with-ttl", "still here", TTL_SECONDS)
    cache.set("nothing", None, None)
    cache.set("big", b"B" * (limit + 1000), None)  # over the KV limit: a FileStore blob
    cache.set("versioned", "v2", None, version=2)
    cache.set("counter", 0, None)
    cache.incr("counter", 41)
    cache.set("short", "gone", 1)
    get_buckethead().kv.set("feature:checkout", "on")  # an application KV key, not a cache entry
    time.sleep(1.2)  # "short" has expired before anything reads it

    print(
        json.dumps(
            {
                "users": list(USERS),
                "documents": documents,
                "counts": _counts(),
                "document_content_type": ContentType.objects.get_for_model(Document).pk,
                "log_entry_object": str(report.pk),
                "max_document_id": max(d["id"] for d in documents.values()),
                "big_cache_bytes": limit + 1000,
            }
        )
    )


def check(expected_json: str) -> None:
    """What the graduated site sees of every user, document, permission, log entry and cache entry."""
    from demo.models import Document
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth import authenticate
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType
    from django.core.cache import cache
    from django.core.files.storage import default_storage

    expected = json.loads(expected_json)
    result: dict[str, Any] = {
        "authenticated": {
            name: getattr(authenticate(username=name, password=password), "username", None)
            for name, password in USERS.items()
        },
        "wrong_password": authenticate(username="bob", password="nope") is None,
        "bob_may_add": User.objects.get(username="bob").has_perm("demo.add_document"),
        "alice_may_change": User.objects.get(username="alice").has_perm("demo.change_document"),
        "alice_may_delete": User.objects.get(username="alice").has_perm("demo.delete_document"),
        "document_content_type": ContentType.objects.get_for_model(Document).pk,
        "counts": _counts(),
    }
    entry = LogEntry.objects.get()
    result["log_entry"] = [entry.content_type.app_label, entry.content_type.model, str(entry.get_edited_object())]
    files = {}
    for doc in Document.objects.all():
        with doc.file.open("rb") as f:
            opened = hashlib.sha256()
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                opened.update(chunk)
        with urllib.request.urlopen(doc.file.url, timeout=30) as response:
            fetched = _sha(response.read())
        files[doc.file.name] = {"opened": opened.hexdigest(), "fetched": fetched, "size": doc.file.size}
    result["files"] = files
    result["storage_names"] = sorted(
        f"{d}/{name}" if d else name for d in ("documents", "documents/many") for name in default_storage.listdir(d)[1]
    )
    big = cache.get("big")
    result["cache"] = {
        "plain": cache.get("plain"),
        "with-ttl": cache.get("with-ttl"),
        "with-ttl ttl": cache.ttl("with-ttl"),
        "nothing in": cache.has_key("nothing"),
        "big": None if big is None else len(big),
        "versioned": cache.get("versioned", version=2),
        "versioned v1": cache.get("versioned"),
        "counter": cache.get("counter"),
        "short": cache.get("short", "absent"),
        "feature:checkout": cache.get("feature:checkout", "absent"),
    }
    new_doc = Document.objects.create(title="after the move", file="documents/none.txt")
    new_user = User.objects.create_user("carol", password="pw-carol-4")
    result["new_ids"] = {
        "document": new_doc.pk,
        "user": new_user.pk,
        "max_document_id": expected["max_document_id"],
        "max_user_id": max(User.objects.exclude(pk=new_user.pk).values_list("pk", flat=True)),
    }
    print(json.dumps(result))
