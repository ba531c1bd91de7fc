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

from .base import BucketHeadAdmin
from .dashboard import DashboardAdmin
from .files import StoredFileAdmin
from .kv import KVEntryAdmin
from .snapshots import SnapshotAdmin

__all__ = ["BucketHeadAdmin", "DashboardAdmin", "KVEntryAdmin", "SnapshotAdmin", "StoredFileAdmin"]
