"""Django settings for the test suite (the engine tests need none; pytest-django needs a module)."""

SECRET_KEY = "tests-only-secret-key"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["buckethead_django"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
