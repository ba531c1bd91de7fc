"""The example's own tests, run with Django's test runner (`manage.py test demo`) or pytest-django.

They use the site's `buckethead_django.db` database: the test runner gives them
a throwaway test database and a throwaway BucketHead engine, never the
configured bucket.
"""

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.test import TestCase

from .models import Document


class DocumentTests(TestCase):
    def test_an_upload_is_a_row_and_a_file(self) -> None:
        doc = Document.objects.create(title="report", file=ContentFile(b"quarterly figures", name="report.txt"))
        again = Document.objects.get(pk=doc.pk)
        self.assertEqual(again.file.read(), b"quarterly figures")

    def test_a_failed_transaction_leaves_nothing(self) -> None:
        user_model = get_user_model()
        user_model.objects.create_user("alice")
        with self.assertRaises(IntegrityError), transaction.atomic():
            user_model.objects.create_user("bob")
            user_model.objects.create_user("alice")
        self.assertEqual(list(user_model.objects.values_list("username", flat=True)), ["alice"])

    def test_the_cache_counts_visits(self) -> None:
        self.client.get("/")
        response = self.client.get("/")
        self.assertContains(response, 'id="visits">')
        self.assertGreaterEqual(cache.get("visits"), 2)
