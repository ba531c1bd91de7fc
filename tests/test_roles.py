"""When a process attaches to the host's database (at ready() or on first use): the decision table, case by case."""

from __future__ import annotations

import sys

import pytest

from buckethead_django.roles import Role, decide

NO_MODULES: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("argv", "environ", "role", "eager"),
    [
        (["manage.py", "runserver"], {}, Role.IDLE, False),
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, Role.SERVER, True),
        (["manage.py", "runserver", "--noreload"], {}, Role.SERVER, True),
        (["manage.py", "runserver", "0.0.0.0:8000", "--noreload"], {}, Role.SERVER, True),
        (["/srv/app/manage.py", "migrate"], {}, Role.PROCESS, False),
        (["manage.py", "makemigrations"], {}, Role.PROCESS, False),
        (["manage.py", "collectstatic", "--noinput"], {}, Role.PROCESS, False),
        (["manage.py", "check"], {}, Role.PROCESS, False),
        (["manage.py", "shell"], {}, Role.PROCESS, False),
        (["manage.py"], {}, Role.PROCESS, False),
        (["manage.py", "test"], {}, Role.TEST, False),
        (["manage.py", "testserver", "fixture.json"], {}, Role.TEST, False),
        (["/usr/bin/django-admin", "migrate"], {}, Role.PROCESS, False),
        (["/venv/lib/python3.11/site-packages/django/__main__.py", "migrate"], {}, Role.PROCESS, False),
        (["/venv/bin/gunicorn", "site.wsgi", "--threads", "8"], {}, Role.SERVER, True),
        (["/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "site.wsgi"], {}, Role.SERVER, True),
        (["/venv/bin/uvicorn", "site.asgi:application"], {}, Role.SERVER, True),
        (["/venv/bin/daphne", "site.asgi:application"], {}, Role.SERVER, True),
        (["worker.py"], {}, Role.PROCESS, False),
    ],
)
def test_role_by_command_line(argv: list[str], environ: dict[str, str], role: Role, eager: bool) -> None:
    decision = decide(argv, environ, None, NO_MODULES)
    assert (decision.role, decision.eager) == (role, eager), decision.reason


def test_server_detected_by_its_loaded_modules() -> None:
    assert decide(["python"], {}, None, {"uvicorn.server"}).role is Role.SERVER


def test_autostart_true_attaches_at_ready_anywhere_but_in_tests() -> None:
    decision = decide(["manage.py", "migrate"], {}, True, NO_MODULES)
    assert (decision.role, decision.eager) == (Role.SERVER, True)
    assert decide(["manage.py", "runserver"], {}, True, NO_MODULES).role is Role.SERVER


def test_autostart_false_attaches_only_on_first_use() -> None:
    for argv in (["gunicorn", "site.wsgi"], ["manage.py", "runserver", "--noreload"]):
        decision = decide(argv, {"RUN_MAIN": "true"}, False, NO_MODULES)
        assert (decision.role, decision.eager) == (Role.PROCESS, False)


def test_test_runners_get_a_throwaway_engine() -> None:
    assert decide(["/venv/bin/pytest"], {}, None, {"pytest", "_pytest"}).role is Role.TEST
    assert decide(["manage.py", "test"], {}, False, NO_MODULES).role is Role.TEST


@pytest.mark.parametrize("autostart", [True, False, None], ids=["autostart-true", "autostart-false", "auto"])
@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (["/venv/bin/pytest", "tests"], {"pytest", "_pytest"}),
        (["/venv/lib/python3.11/site-packages/pytest/__main__.py"], {"pytest", "_pytest"}),
        (["manage.py", "test"], NO_MODULES),
        (["/venv/lib/python3.11/site-packages/django/__main__.py", "test", "app"], NO_MODULES),
        (["manage.py", "testserver", "fixture.json"], NO_MODULES),
    ],
)
def test_a_test_run_never_reaches_the_configured_bucket_whatever_autostart_says(
    argv: list[str], modules: set[str], autostart: bool | None
) -> None:
    """``BUCKETHEAD_AUTOSTART=true`` left in a developer's shell must not make the test run write the real bucket."""
    decision = decide(argv, {"RUN_MAIN": "true"}, autostart, modules)
    assert (decision.role, decision.eager) == (Role.TEST, False), decision.reason


def test_this_very_test_run_is_a_test_run_even_with_autostart() -> None:
    decision = decide(sys.argv, {}, True, sys.modules.keys())
    assert decision.role is Role.TEST, decision.reason


def test_every_decision_explains_itself() -> None:
    decision = decide(["manage.py", "migrate"], {}, None, NO_MODULES)
    assert "migrate" in decision.reason
