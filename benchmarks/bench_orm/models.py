from django.db import models


class Row(models.Model):
    """A small row with an indexed tag, as a site's model would have."""

    tag = models.CharField(max_length=32, db_index=True)
    number = models.IntegerField(default=0)
    payload = models.TextField()

    class Meta:
        app_label = "bench_orm"

    def __str__(self) -> str:
        return f"row {self.pk}"
