"""The Django database backend on the host's BucketHead database: ``DATABASES = {"default": {"ENGINE":
"buckethead_django.db"}}``. See `buckethead_django.db.base`."""
