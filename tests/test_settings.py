"""The BUCKETHEAD settings dict, BUCKETHEAD_* environment variables, and the system checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from buckethead_django.conf import DEFAULTS, get_settings


def check_ids() -> list[str]:
    return [m.id for m in checks.run_checks(tags=["buckethead"])]


def test_defaults_are_the_zero_config_local_backend(settings) -> None:
    s = get_settings({})
    assert s.problems == []
    assert s["BACKEND"] == "local"
    assert s.local_path == Path(settings.BASE_DIR) / ".buckethead"
    cfg = s.bucket_config()
    assert cfg.local_path == s.local_path
    assert cfg.key == "bucketsqlite/snap.db"
    assert s.snapshot_config().interval_seconds == 60.0


def test_environment_variables_fill_in_and_the_settings_dict_wins() -> None:
    env = {
        "BUCKETHEAD_BACKEND": "s3",
        "BUCKETHEAD_BUCKET": "from-env",
        "BUCKETHEAD_ACCESS_KEY_ID": "ak",
        "BUCKETHEAD_SECRET_ACCESS_KEY": "sk",
        "BUCKETHEAD_FLUSH_INTERVAL": "30",
        "BUCKETHEAD_KEEP_PREVIOUS": "false",
        "BUCKETHEAD_AUTOSTART": "auto",
    }
    with override_settings(BUCKETHEAD={"BUCKET": "from-settings"}):
        s = get_settings(env)
    assert s.problems == []
    assert s["BUCKET"] == "from-settings"
    assert s.sources["BUCKET"] == "settings.BUCKETHEAD['BUCKET']"
    assert s["BACKEND"] == "s3"
    assert s.sources["BACKEND"] == "environment variable BUCKETHEAD_BACKEND"
    assert s["FLUSH_INTERVAL"] == 30.0
    assert s["KEEP_PREVIOUS"] is False
    assert s["AUTOSTART"] is None
    assert s.describe()["SECRET_ACCESS_KEY"] == "********"


def test_cloudflare_account_id_builds_the_r2_endpoint() -> None:
    account = "0123456789abcdef0123456789abcdef"
    with override_settings(
        BUCKETHEAD={
            "BACKEND": "s3",
            "BUCKET": "media",
            "ACCOUNT_ID": account,
            "ACCESS_KEY_ID": "a",
            "SECRET_ACCESS_KEY": "s",
        }
    ):
        cfg = get_settings({}).bucket_config()
    assert cfg.endpoint_url == f"https://{account}.r2.cloudflarestorage.com"
    assert cfg.region == "auto"


def test_every_default_key_is_accepted() -> None:
    with override_settings(BUCKETHEAD=dict(DEFAULTS)):
        assert get_settings({}).problems == []


@pytest.mark.parametrize(
    ("bucket_settings", "environ", "check_id", "hint_part"),
    [
        ({"BUCKTE": "x"}, {}, "buckethead_django.E001", "Did you mean 'BUCKET'"),
        ({"BACKEND": "redis"}, {}, "buckethead_django.E002", "'local'"),
        ({"BACKEND": "s3"}, {}, "buckethead_django.E003", "BUCKETHEAD_BUCKET"),
        ({"FLUSH_INTERVAL": "often"}, {}, "buckethead_django.E004", "positive number"),
        ({"FLUSH_INTERVAL": 0}, {}, "buckethead_django.E004", "positive number"),
        ({}, {"BUCKETHEAD_KEEP_PREVIOUS": "maybe"}, "buckethead_django.E004", "True or False"),
        ({"AUTOSTART": "sometimes"}, {}, "buckethead_django.E004", "'auto'"),
        (
            {
                "BACKEND": "s3",
                "BUCKET": "b",
                "ACCOUNT_ID": "abc",
                "ENDPOINT_URL": "http://x",
                "ACCESS_KEY_ID": "a",
                "SECRET_ACCESS_KEY": "s",
            },
            {},
            "buckethead_django.E005",
            "only ACCOUNT_ID",
        ),
        ({"FILES_PREFIX": "files"}, {}, "buckethead_django.E006", "Fix the value"),
        ({"BACKEND": "s3", "BUCKET": "b"}, {}, "buckethead_django.W001", "R2 API token"),
        (
            {
                "BACKEND": "s3",
                "BUCKET": "b",
                "ACCOUNT_ID": "abc",
                "ACCESS_KEY_ID": "a",
                "SECRET_ACCESS_KEY": "s",
                "MIN_FLUSH_INTERVAL": 0.2,
            },
            {},
            "buckethead_django.W002",
            "429",
        ),
    ],
)
def test_mistakes_are_reported_by_system_checks_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, bucket_settings: dict, environ: dict, check_id: str, hint_part: str
) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with override_settings(BUCKETHEAD=bucket_settings):
        messages = checks.run_checks(tags=["buckethead"])
    matching = [m for m in messages if m.id == check_id]
    assert matching, [m.id for m in messages]
    assert hint_part in (matching[0].hint or "")


def test_a_correct_configuration_passes_the_checks() -> None:
    with override_settings(BUCKETHEAD={"BACKEND": "s3", "BUCKET": "b", "ACCESS_KEY_ID": "a", "SECRET_ACCESS_KEY": "s"}):
        assert check_ids() == []


def test_a_non_dict_setting_is_reported() -> None:
    with override_settings(BUCKETHEAD="s3://bucket"):
        assert "buckethead_django.E001" in check_ids()
