from django.db import models


class Document(models.Model):
    """An uploaded file; its bytes live in the bucket through BucketHeadStorage (STORAGES['default'])."""

    title = models.CharField(max_length=200)
    file = models.FileField(upload_to="documents/")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-uploaded_at",)

    def __str__(self) -> str:
        return self.title
