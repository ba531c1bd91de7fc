"""The Django database backend ``buckethead_django.db`` with real ``manage.py`` processes of the example project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .servers import EXAMPLE, example_env, manage

SITES = Path(__file__).resolve().parent / "sites"


def notes(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``manage.py`` of the example project with the ``notes`` app (see tests/sites)."""
    return manage(
        state, *args, check=check, DJANGO_SETTINGS_MODULE="notes_site", PYTHONPATH=f"{EXAMPLE}{os.pathsep}{SITES}"
    )


def test_dumpdata_of_everything_and_loaddata_on_a_new_host(tmp_path: Path) -> None:
    first = tmp_path / "first"
    manage(first, "migrate")
    manage(first, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('alice')")
    dump = tmp_path / "dump.json"
    everything = manage(first, "dumpdata", "--natural-foreign", "--natural-primary", "-o", str(dump))
    assert everything.returncode == 0, "every model, the admin section's tableless ones too"
    users = [row for row in json.loads(dump.read_text()) if row["model"] == "auth.user"]
    assert [row["fields"]["username"] for row in users] == ["alice"]

    other = tmp_path / "other"  # another bucket, another host
    env = {"BUCKETHEAD_LOCAL_PATH": str(other / "bucket")}
    manage(other, "migrate", **env)
    manage(other, "loaddata", str(dump), **env)
    found = manage(
        other, "shell", "-c", "from django.contrib.auth.models import User; print(User.objects.get().username)", **env
    )
    assert found.stdout.strip().splitlines()[-1] == "alice"


def test_writers_of_several_processes_wait_their_turn_inside_transactions(tmp_path: Path) -> None:
    """Read-then-write transactions in two processes at once: none fails with "database is locked", none is lost."""
    notes(tmp_path, "migrate")
    notes(tmp_path, "shell", "-c", "from notes.models import Note; Note.objects.create(body='0')")
    increment = (
        "from django.db import transaction; from notes.models import Note\n"
        "for _ in range(150):\n"
        "    with transaction.atomic():\n"
        "        note = Note.objects.get()\n"
        "        note.body = str(int(note.body) + 1)\n"
        "        note.save()\n"
        "print('done')"
    )
    env = example_env(
        tmp_path,
        DJANGO_SETTINGS_MODULE="notes_site",
        PYTHONPATH=f"{EXAMPLE}{os.pathsep}{SITES}",
        PYTHONFAULTHANDLER="1",
    )
    workers = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLE / "manage.py"), "shell", "-c", increment],
            env=env,
            cwd=EXAMPLE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "done" in out
    final = notes(tmp_path, "shell", "-c", "from notes.models import Note; print(Note.objects.get().body)")
    assert final.stdout.strip().splitlines()[-1] == "300"


def test_a_name_for_the_database_is_refused_by_the_system_checks(tmp_path: Path) -> None:
    named = manage(
        tmp_path, "check", check=False, DJANGO_SETTINGS_MODULE="named_site", PYTHONPATH=f"{EXAMPLE}{os.pathsep}{SITES}"
    )
    assert named.returncode != 0
    assert "buckethead_django.E102" in named.stderr
    assert "Remove NAME" in named.stderr
    assert "import-database" in named.stderr
