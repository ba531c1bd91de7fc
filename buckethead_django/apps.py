"""The Django app: decide this process's role, and attach a server's process to the host's database at once."""

from __future__ import annotations

import os
import sys

from django.apps import AppConfig


class BucketHeadConfig(AppConfig):
    name = "buckethead_django"
    verbose_name = "BucketHead"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, runtime  # noqa: F401, PLC0415 - registers the system checks
        from .conf import get_settings  # noqa: PLC0415
        from .roles import decide  # noqa: PLC0415

        if runtime.decision() is not None:
            return  # ready() can run more than once; the role is decided once per process
        autostart = get_settings()["AUTOSTART"]
        runtime.configure(decide(sys.argv, os.environ, autostart, sys.modules.keys()))
