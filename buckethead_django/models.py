"""Models without tables: anchors for the admin section and its permissions.

The admin lists models, so each page of the BucketHead section is an
unmanaged model whose admin changelist is that page. `Dashboard` also carries
the section's two permissions, which Django creates with the migration like
any other model's. Having no table, they have no rows: their manager's
querysets are empty, so whatever walks every model (``dumpdata`` with no
arguments) finds nothing here instead of a missing table.
"""

from __future__ import annotations

from django.db import models


class NoRows(models.Manager):
    """The manager of a model without a table: every queryset is empty, and no query reaches the database."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().none()


class TablelessModel(models.Model):
    objects = NoRows()

    class Meta:
        abstract = True


class Dashboard(TablelessModel):
    """The BucketHead dashboard; its permissions guard the section's actions."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = (
            ("flush_buckethead", "Can flush BucketHead to the bucket now"),
            ("manage_buckethead_data", "Can delete BucketHead KV entries and files"),
        )
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"


class KVEntry(TablelessModel):
    """The KV browser."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "KV entry"
        verbose_name_plural = "KV entries"


class StoredFile(TablelessModel):
    """The files browser."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "file"
        verbose_name_plural = "files"


class Snapshot(TablelessModel):
    """The snapshot history."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "snapshot"
        verbose_name_plural = "snapshots"
