"""System checks: configuration mistakes reported by ``manage.py check``, with a hint that says what to set."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .conf import get_settings


@checks.register("buckethead")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for problem in get_settings().problems:
        level = checks.Error if problem.error else checks.Warning
        messages.append(level(problem.msg, hint=problem.hint, id=f"buckethead_django.{problem.id}"))
    return messages
