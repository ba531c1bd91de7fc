from django.db import models


class Note(models.Model):
    """A note; ``author`` is added by the app's second migration."""

    body = models.TextField()
    author = models.CharField(max_length=100, default="")
