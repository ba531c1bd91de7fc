from demo import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("files/<str:bh_key>", views.download, name="download"),
]
