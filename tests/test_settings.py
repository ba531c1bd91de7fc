"""The BUCKETHEAD settings dict, BUCKETHEAD_* environment variables, and the system checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from buckethead_django.conf import DEFAULTS, get_settings
from buckethead_django.engine import CurrentSnapshotCorrupt


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
    assert s.snapshot_config().interval_seconds == 5.0, "a 5-second window: a flush costs what changed"


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
        ({"HEALTH_DETAILS": "admins"}, {}, "buckethead_django.E004", "'staff' (only staff users"),
        ({}, {"BUCKETHEAD_HEALTH_DETAILS": "2"}, "buckethead_django.E004", "'never' or False"),
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


# -- snapshot retention, signing, and waiting at startup -------------------------------------------


def test_retention_and_startup_waits_have_defaults_and_reach_the_engine(tmp_path: Path) -> None:
    s = get_settings({})
    assert (
        s["KEEP_SNAPSHOTS"],
        s["KEEP_SNAPSHOTS_MAX_AGE"],
        s["KEEP_DAILY"],
        s["LEASE_WAIT"],
        s["STARTUP_TIMEOUT"],
    ) == (
        24,
        86400.0,
        30,
        20.0,
        30.0,
    )
    assert (s["COMPACT_RATIO"], s["COMPACT_DELTAS"]) == (0.5, 100_000)
    env = {
        "BUCKETHEAD_KEEP_SNAPSHOTS": "5",
        "BUCKETHEAD_KEEP_SNAPSHOTS_MAX_AGE": "86400",
        "BUCKETHEAD_KEEP_DAILY": "7",
        "BUCKETHEAD_COMPACT_RATIO": "0.25",
        "BUCKETHEAD_COMPACT_DELTAS": "100",
        "BUCKETHEAD_LEASE_WAIT": "0",
        "BUCKETHEAD_STARTUP_TIMEOUT": "2.5",
        "BUCKETHEAD_LOCAL_PATH": str(tmp_path),
    }
    s = get_settings(env)
    assert s.problems == []
    engine = s.engine()
    assert (engine.snapshot_config.keep_snapshots, engine.snapshot_config.keep_max_age_seconds) == (5, 86400.0)
    assert (engine.snapshot_config.keep_daily, engine.snapshot_config.compact_ratio) == (7, 0.25)
    assert engine.snapshot_config.compact_deltas == 100
    assert (engine.lease_wait, engine.startup_timeout) == (0.0, 2.5)


@pytest.mark.parametrize(
    ("bucket_settings", "message", "hint_part"),
    [
        ({"KEEP_SNAPSHOTS": 0}, "BUCKETHEAD 'KEEP_SNAPSHOTS' must be greater than 0, not 0.", "positive number"),
        ({"KEEP_SNAPSHOTS": "many"}, "BUCKETHEAD 'KEEP_SNAPSHOTS' has the value 'many'", "for example 24"),
        (
            {"KEEP_SNAPSHOTS_MAX_AGE": -5},
            "'KEEP_SNAPSHOTS_MAX_AGE' must be greater than 0, not -5.0.",
            "for no age rule",
        ),
        ({"KEEP_SNAPSHOTS_MAX_AGE": "a day"}, "'KEEP_SNAPSHOTS_MAX_AGE' has the value 'a day'", "86400 for a day"),
        ({"SIGNING_KEY": 42}, "BUCKETHEAD 'SIGNING_KEY' has the value 42", "False to disable signing"),
        ({"LEASE_WAIT": -1}, "BUCKETHEAD 'LEASE_WAIT' must be 0 or more, not -1.0.", "the default is 20.0"),
        ({"STARTUP_TIMEOUT": "soon"}, "BUCKETHEAD 'STARTUP_TIMEOUT' has the value 'soon'", "for example 30.0"),
        ({"STARTUP_TIMEOUT": -0.5}, "BUCKETHEAD 'STARTUP_TIMEOUT' must be 0 or more", "the default is 30.0"),
    ],
)
def test_bad_retention_signing_and_wait_settings_are_reported(
    bucket_settings: dict, message: str, hint_part: str
) -> None:
    with override_settings(BUCKETHEAD=bucket_settings):
        messages = checks.run_checks(tags=["buckethead"])
    assert [m.id for m in messages] == ["buckethead_django.E004"]
    assert message in messages[0].msg
    assert hint_part in messages[0].hint


def write_and_read(writer_settings: dict, reader_settings: dict) -> str | None:
    """Flush a value with an engine built from ``writer_settings``, then load it with one from ``reader_settings``."""
    with override_settings(**writer_settings), get_settings({}).engine(background_flush=False) as writer:
        writer.kv.set("k", "signed by the writer")
    with override_settings(**reader_settings):
        reader = get_settings({}).engine(read_only_reason="only reads")
    with reader:
        return reader.kv.get("k")


def test_snapshots_are_signed_with_a_key_derived_from_secret_key(tmp_path: Path) -> None:
    bucket = {"BUCKETHEAD": {"LOCAL_PATH": str(tmp_path / "bucket")}}
    old = {**bucket, "SECRET_KEY": "the-old-secret-key"}
    new = {**bucket, "SECRET_KEY": "a-new-secret-key"}
    assert write_and_read(old, old) == "signed by the writer"
    with pytest.raises(CurrentSnapshotCorrupt, match="its HMAC does not match"):
        write_and_read(old, new)
    rotated = {**new, "SECRET_KEY_FALLBACKS": ["the-old-secret-key"]}
    with override_settings(**old), get_settings({}).engine(background_flush=False) as writer:
        writer.kv.set("k", "written before the rotation")
    with override_settings(**rotated), get_settings({}).engine(background_flush=False) as writer:
        assert writer.kv.get("k") == "written before the rotation", "SECRET_KEY_FALLBACKS still verify"
        writer.kv.set("k", "written after the rotation")
    with override_settings(**new), get_settings({}).engine(read_only_reason="only reads") as reader:
        assert reader.kv.get("k") == "written after the rotation", "new snapshots are signed with the new key"
    with override_settings(**rotated):
        assert len(get_settings({}).signing_keys()) == 2, "signs with the new key, verifies with both"


def test_a_signing_key_of_its_own_lets_projects_with_different_secret_keys_share_a_bucket(tmp_path: Path) -> None:
    shared = {"LOCAL_PATH": str(tmp_path / "bucket"), "SIGNING_KEY": "shared-snapshot-secret"}
    one = {"BUCKETHEAD": shared, "SECRET_KEY": "project-one"}
    two = {"BUCKETHEAD": shared, "SECRET_KEY": "project-two"}
    assert write_and_read(one, two) == "signed by the writer"
    with override_settings(**one):
        assert get_settings({}).describe()["SIGNING_KEY"] == "********"
    stranger = {"BUCKETHEAD": {"LOCAL_PATH": str(tmp_path / "bucket")}, "SECRET_KEY": "project-one"}
    with pytest.raises(CurrentSnapshotCorrupt, match="its HMAC does not match"):
        write_and_read(one, stranger)


@pytest.mark.parametrize("off", ["off", "false", "0", "no"])
def test_signing_can_be_switched_off_from_the_environment(tmp_path: Path, off: str) -> None:
    s = get_settings({"BUCKETHEAD_SIGNING_KEY": off, "BUCKETHEAD_LOCAL_PATH": str(tmp_path)})
    assert s.problems == []
    assert s["SIGNING_KEY"] is False
    assert s.signing_keys() == []
    assert s.describe()["SIGNING_KEY"] is False
    engine = s.engine(background_flush=False)
    assert (engine.signing_key, engine.verify_keys) == (None, ())


def test_without_signing_any_snapshot_loads_and_none_is_signed(tmp_path: Path) -> None:
    unsigned = {"BUCKETHEAD": {"LOCAL_PATH": str(tmp_path / "bucket"), "SIGNING_KEY": False}}
    signed = {"BUCKETHEAD": {"LOCAL_PATH": str(tmp_path / "bucket")}}
    assert write_and_read(signed, unsigned) == "signed by the writer", "signatures are not checked"
    with pytest.raises(CurrentSnapshotCorrupt, match="it is not signed"):
        write_and_read(unsigned, signed)


def test_the_age_rule_of_retention_is_turned_off_with_none(settings) -> None:
    settings.BUCKETHEAD = {"KEEP_SNAPSHOTS_MAX_AGE": None}
    assert get_settings({}).snapshot_config().keep_max_age_seconds is None, "None given on purpose is no age rule"
    settings.BUCKETHEAD = {}
    assert get_settings({}).snapshot_config().keep_max_age_seconds == 86400.0, "unset is the default, a day"
    assert get_settings({"BUCKETHEAD_KEEP_SNAPSHOTS_MAX_AGE": "none"}).snapshot_config().keep_max_age_seconds is None


def test_how_long_every_flush_stays_a_point_is_set_in_seconds_or_turned_off(settings) -> None:
    assert get_settings({}).snapshot_config().keep_every_flush_seconds == 3600.0, "unset is the default, an hour"
    assert get_settings({"BUCKETHEAD_KEEP_EVERY_FLUSH": "86400"}).snapshot_config().keep_every_flush_seconds == 86400
    assert get_settings({"BUCKETHEAD_KEEP_EVERY_FLUSH": "off"}).snapshot_config().keep_every_flush_seconds is None
    settings.BUCKETHEAD = {"KEEP_EVERY_FLUSH": None}
    assert get_settings({}).snapshot_config().keep_every_flush_seconds is None, "None given on purpose keeps them all"
    settings.BUCKETHEAD = {"KEEP_EVERY_FLUSH": "an hour"}
    (problem,) = get_settings({}).problems
    assert "'KEEP_EVERY_FLUSH' has the value 'an hour'" in problem.msg
    assert "3600 for an hour" in problem.hint


def test_a_read_replica_is_configured_by_role_and_gets_a_directory_of_its_own() -> None:
    writer = get_settings({})
    replica = get_settings({"BUCKETHEAD_ROLE": "replica", "BUCKETHEAD_REPLICA_POLL_INTERVAL": "2"})
    assert replica.problems == []
    assert (writer.replica, replica.replica) == (False, True)
    assert replica.local_dir.path != writer.local_dir.path, "a writer and a replica may share a machine"
    engine = replica.engine()
    assert (engine.replica, engine.read_only, engine.poll_seconds) == (True, True, 2.0)
    assert engine.local.path == replica.local_dir.path
    assert get_settings({"BUCKETHEAD_ROLE": "replica"}).engine().poll_seconds == writer["FLUSH_INTERVAL"]


@pytest.mark.parametrize(
    ("env", "key", "hint"),
    [
        ({"BUCKETHEAD_ROLE": "reader"}, "ROLE", "'replica'"),
        ({"BUCKETHEAD_REPLICA_POLL_INTERVAL": "soon"}, "REPLICA_POLL_INTERVAL", "every FLUSH_INTERVAL"),
        ({"BUCKETHEAD_REPLICA_MAX_LAG": "0"}, "REPLICA_MAX_LAG", "positive"),
        ({"BUCKETHEAD_WRITER_URL": "www.example.com"}, "WRITER_URL", "public address"),
    ],
)
def test_replica_settings_that_make_no_sense_are_refused_with_a_hint(env: dict[str, str], key: str, hint: str) -> None:
    problems = get_settings(env).errors
    assert [p.msg for p in problems if key in p.msg], problems
    assert any(hint in p.hint for p in problems), problems
