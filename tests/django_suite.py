"""Django's own cache test package (``tests/cache/`` of the Django source distribution), for the installed Django.

The wheel does not ship Django's tests, so the sdist of exactly the installed
version is downloaded once with pip into ``.cache/django-tests/`` (git-ignored)
and its ``tests/cache/`` is extracted next to it as the top-level package
``cache``, the name Django's test runner gives it: its settings refer to
``cache.tests.custom_key_func``, and its models belong to an app labelled
``cache``.

`cache_test_apps()` runs when ``tests/settings.py`` is imported, before
Django loads its apps, because the ``cache`` app must be installed then for
its ``Poll`` model to get a table. It never raises: a failure is kept in
`PROBLEM` and reported by ``test_django_cache_suite.py`` as a failing test,
so the rest of the suite still runs. Set ``BUCKETHEAD_SKIP_DJANGO_SUITE=1``
to skip Django's suite deliberately (for example when working offline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "django-tests"
SKIP_ENV = "BUCKETHEAD_SKIP_DJANGO_SUITE"

#: Why Django's cache tests are not available (None when they are, or when deliberately skipped).
PROBLEM: str | None = None


def skipped() -> bool:
    return os.environ.get(SKIP_ENV, "").lower() in {"1", "true", "yes", "on"}


def cache_test_apps() -> list[str]:
    """``["cache"]`` with Django's cache test package importable, or ``[]`` if it is skipped or unavailable."""
    global PROBLEM  # noqa: PLW0603 - set once, at settings import
    if skipped():
        return []
    try:
        root = tests_root(django.__version__)
    except (OSError, subprocess.CalledProcessError, tarfile.TarError, LookupError) as exc:
        output = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or ""
        PROBLEM = (
            f"could not get Django {django.__version__}'s cache tests into {CACHE_DIR}: {exc}\n{output}\n"
            f"They are downloaded once with pip (network access to the package index is needed the first time); "
            f"set {SKIP_ENV}=1 to skip them."
        )
        return []
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ["cache"]


def tests_root(version: str) -> Path:
    """A directory that holds Django ``version``'s ``cache`` test package, downloading the sdist if needed."""
    root = CACHE_DIR / f"django-{version}"
    if (root / "cache" / "tests.py").is_file():
        return root
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sdist = _download_sdist(version)
    # Extract into a private directory, then rename: a concurrent run never sees half a package.
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=CACHE_DIR))
    staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        _extract_cache_tests(sdist, staging / "cache")
        try:
            staging.rename(root)
        except OSError:
            if not (root / "cache" / "tests.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _download_sdist(version: str) -> Path:
    existing = _find_sdist(version)
    if existing is not None:
        return existing
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--no-binary", ":all:", f"Django=={version}", "-d", str(CACHE_DIR)],
        check=True,
        capture_output=True,
        text=True,
    )
    found = _find_sdist(version)
    if found is None:
        raise LookupError(f"pip reported success but left no Django {version} sdist in {CACHE_DIR}")
    return found


def _find_sdist(version: str) -> Path | None:
    for name in (f"django-{version}.tar.gz", f"Django-{version}.tar.gz"):
        if (CACHE_DIR / name).is_file():
            return CACHE_DIR / name
    return None


def _extract_cache_tests(sdist: Path, dest: Path) -> None:
    """Copy the regular files of ``<top>/tests/cache/`` (no subdirectories) out of the sdist into ``dest``."""
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1:3] == ["tests", "cache"]:
                source = tar.extractfile(member)
                if source is not None:
                    (dest / parts[3]).write_bytes(source.read())
    if not (dest / "tests.py").is_file():
        raise LookupError(f"{sdist.name} has no tests/cache/tests.py")
