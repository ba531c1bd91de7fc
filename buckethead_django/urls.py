"""URLs of the buckethead_django app. Include them once: ``path("buckethead/", include("buckethead_django.urls"))``."""

from django.urls import path

from . import metrics, views

app_name = "buckethead_django"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", metrics.metrics, name="metrics"),
    path("files/<str:token>/<str:filename>", views.serve_file, name="file"),
]
