"""buckethead-django: an in-memory SQLite made durable in an S3-compatible bucket, for Django."""

__version__ = "0.1.0"
