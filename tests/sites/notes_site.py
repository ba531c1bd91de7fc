"""The example project plus one small app, ``notes``, whose second migration adds a column.

For tests that run ``migrate`` while the site serves: start it with
``DJANGO_SETTINGS_MODULE=notes_site`` and this directory on ``PYTHONPATH``.
"""

from example_site.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "notes"]  # noqa: F405
