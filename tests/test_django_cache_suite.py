"""Django's generic cache tests (``BaseCacheTests``) run against BucketHeadCache, all of them.

Declared the way Django declares them for its built-in backends (see
``LocMemCacheTests`` and ``DBCacheTests`` in Django's ``tests/cache/tests.py``):
every alias of ``caches_setting_for_tests()`` uses this backend with one
shared LOCATION, so the "prefix", "v2" and "custom_key" aliases see the same
entries as the default cache, as their tests expect. No test is excluded or
overridden; `django_suite` explains where the tests come from.
"""

from __future__ import annotations

import pytest
from django.test import TestCase, override_settings

from . import django_suite

if django_suite.skipped():
    pytest.skip(f"{django_suite.SKIP_ENV} is set", allow_module_level=True)

if django_suite.PROBLEM is not None:

    def test_django_cache_tests_are_available() -> None:
        pytest.fail(django_suite.PROBLEM, pytrace=False)

else:
    from cache.tests import BaseCacheTests, caches_setting_for_tests

    @override_settings(
        CACHES=caches_setting_for_tests(BACKEND="buckethead_django.cache.BucketHeadCache", LOCATION="django-suite")
    )
    class BucketHeadCacheTests(BaseCacheTests, TestCase):
        pass
