from demo import views
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", views.index, name="index"),
    path("cached/", views.cached_report, name="cached-report"),
    path("admin/", admin.site.urls),
    path("buckethead/", include("buckethead_django.urls")),
]
