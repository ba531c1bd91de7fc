"""URLs for the test suite."""

from django.urls import include, path

urlpatterns = [
    path("buckethead/", include("buckethead_django.urls")),
]
