"""Settings: the ``BUCKETHEAD`` dict, ``BUCKETHEAD_<KEY>`` environment variables, and defaults.

Read in one place, validated into a list of problems rather than raised, so a
mistake shows up in ``manage.py check`` with a hint instead of a traceback at
import. The settings dict wins over the environment where both set a key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.utils.crypto import salted_hmac

from .engine import BucketConfig, BucketSQLite, SnapshotConfig
from .engine import config as engine_config
from .engine.database import LocalDir, choose_local_dir, host_identity

ENV_PREFIX = "BUCKETHEAD_"
BACKENDS = ("local", "s3")
#: Who sees the health view's details (errors, the fence, the snapshot, the role): staff users, anyone, or nobody.
HEALTH_DETAILS = ("staff", "public", "never")

#: Every key the ``BUCKETHEAD`` dict accepts, with its default: the engine's own (`engine.config`) where it has one.
DEFAULTS: dict[str, Any] = {
    "BACKEND": "local",
    "LOCAL_PATH": None,
    "LOCAL_DIR": None,
    "BUCKET": "",
    "ENDPOINT_URL": None,
    "ACCOUNT_ID": None,
    "REGION": None,
    "ACCESS_KEY_ID": None,
    "SECRET_ACCESS_KEY": None,
    "SESSION_TOKEN": None,
    "SNAPSHOT_KEY": engine_config.DEFAULT_SNAPSHOT_KEY,
    "FILES_PREFIX": engine_config.DEFAULT_FILES_PREFIX,
    "FLUSH_INTERVAL": engine_config.DEFAULT_FLUSH_INTERVAL,
    "MIN_FLUSH_INTERVAL": engine_config.DEFAULT_MIN_FLUSH_INTERVAL,
    "COMPACT_RATIO": engine_config.DEFAULT_COMPACT_RATIO,
    "COMPACT_DELTAS": engine_config.DEFAULT_COMPACT_DELTAS,
    "KEEP_PREVIOUS": engine_config.DEFAULT_KEEP_PREVIOUS,
    "KEEP_SNAPSHOTS": engine_config.DEFAULT_KEEP_SNAPSHOTS,
    "KEEP_SNAPSHOTS_MAX_AGE": engine_config.DEFAULT_KEEP_SNAPSHOTS_MAX_AGE,
    "KEEP_EVERY_FLUSH": engine_config.DEFAULT_KEEP_EVERY_FLUSH,
    "KEEP_DAILY": engine_config.DEFAULT_KEEP_DAILY,
    "KEEP_PRE_RESTORE": engine_config.DEFAULT_KEEP_PRE_RESTORE,
    "SIGNING_KEY": None,
    "LEASE_SECONDS": engine_config.DEFAULT_LEASE_SECONDS,
    "LEASE_WAIT": engine_config.DEFAULT_LEASE_WAIT,
    "STARTUP_TIMEOUT": engine_config.DEFAULT_STARTUP_TIMEOUT,
    "LEASE_CONFLICT": engine_config.DEFAULT_LEASE_CONFLICT,
    "ROLE": engine_config.DEFAULT_ROLE,
    "REPLICA_POLL_INTERVAL": engine_config.DEFAULT_REPLICA_POLL_INTERVAL,
    "REPLICA_MAX_LAG": engine_config.DEFAULT_REPLICA_MAX_LAG,
    #: On a read replica: the writer host's public address, where `ReplicaWritesMiddleware` sends writes.
    "WRITER_URL": None,
    "AUTOSTART": None,
    "BUSY_TIMEOUT": engine_config.DEFAULT_BUSY_TIMEOUT,
    "KV_MAX_VALUE_BYTES": engine_config.DEFAULT_KV_MAX_VALUE_BYTES,
    "MAX_ATTEMPTS": engine_config.DEFAULT_MAX_ATTEMPTS,
    "CONNECT_TIMEOUT": engine_config.DEFAULT_CONNECT_TIMEOUT,
    "READ_TIMEOUT": engine_config.DEFAULT_READ_TIMEOUT,
    "CUSTOM_DOMAIN": None,
    "QUERYSTRING_EXPIRE": 3600,
    "FILE_OVERWRITE": False,
    "HEALTH_DETAILS": "staff",
}

_SECRETS = {"SECRET_ACCESS_KEY", "SESSION_TOKEN", "SIGNING_KEY"}
_POSITIVE = {"FLUSH_INTERVAL", "LEASE_SECONDS", "BUSY_TIMEOUT", "KV_MAX_VALUE_BYTES", "MAX_ATTEMPTS", "CONNECT_TIMEOUT",
             "READ_TIMEOUT", "QUERYSTRING_EXPIRE", "KEEP_SNAPSHOTS", "KEEP_SNAPSHOTS_MAX_AGE", "COMPACT_RATIO",
             "COMPACT_DELTAS", "KEEP_PRE_RESTORE", "KEEP_EVERY_FLUSH", "REPLICA_POLL_INTERVAL",
             "REPLICA_MAX_LAG"}  # fmt: skip
#: Keys whose None, given in the settings, turns a rule off instead of meaning "the default".
_NONE_TURNS_OFF = {"KEEP_SNAPSHOTS_MAX_AGE", "KEEP_EVERY_FLUSH"}
_NOT_NEGATIVE = {"MIN_FLUSH_INTERVAL", "LEASE_WAIT", "STARTUP_TIMEOUT", "KEEP_DAILY"}
#: The fixed salt that turns SECRET_KEY (or SIGNING_KEY) into the key snapshots are signed with.
SIGNING_SALT = "buckethead_django.snapshot-signing"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Problem:
    """One configuration mistake: reported by the system check ``buckethead_django.<id>``."""

    id: str
    msg: str
    hint: str
    error: bool = True


@dataclass(frozen=True)
class BucketHeadSettings:
    """The effective configuration, after defaults, environment and the settings dict."""

    values: dict[str, Any]
    sources: dict[str, str]
    problems: list[Problem] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]

    def bucket_config(self) -> BucketConfig:
        """The engine's BucketConfig. Only call when `errors` is empty."""
        v = self.values
        common: dict[str, Any] = {
            "key": v["SNAPSHOT_KEY"],
            "files_prefix": v["FILES_PREFIX"],
        }
        if v["BACKEND"] == "local":
            return BucketConfig.local(self.local_path, **common)
        s3: dict[str, Any] = {
            **common,
            "access_key_id": v["ACCESS_KEY_ID"],
            "secret_access_key": v["SECRET_ACCESS_KEY"],
            "session_token": v["SESSION_TOKEN"],
            "max_attempts": int(v["MAX_ATTEMPTS"]),
            "connect_timeout": float(v["CONNECT_TIMEOUT"]),
            "read_timeout": float(v["READ_TIMEOUT"]),
        }
        if v["ACCOUNT_ID"]:
            return BucketConfig.for_r2(account_id=v["ACCOUNT_ID"], bucket=v["BUCKET"], **s3)
        return BucketConfig(bucket=v["BUCKET"], endpoint_url=v["ENDPOINT_URL"], region=v["REGION"], **s3)

    def engine(self, **overrides: Any) -> BucketSQLite:
        """A (not yet started) engine built from these settings; ``overrides`` are BucketSQLite arguments."""
        keys = self.signing_keys()
        kwargs: dict[str, Any] = {
            "busy_timeout": float(self.values["BUSY_TIMEOUT"]),
            "kv_max_value_bytes": int(self.values["KV_MAX_VALUE_BYTES"]),
            "lease_seconds": float(self.values["LEASE_SECONDS"]),
            "lease_wait": float(self.values["LEASE_WAIT"]),
            "startup_timeout": float(self.values["STARTUP_TIMEOUT"]),
            "local_dir": self.local_dir,
            "lease_conflict": self.values["LEASE_CONFLICT"],
            "replica": self.replica,
            "poll_seconds": self.values["REPLICA_POLL_INTERVAL"],
            "max_lag": float(self.values["REPLICA_MAX_LAG"]),
            "signing_key": keys[0] if keys else None,
            "verify_keys": keys[1:],
            **overrides,
        }
        return BucketSQLite(self.bucket_config(), self.snapshot_config(), **kwargs)

    def snapshot_config(self) -> SnapshotConfig:
        return SnapshotConfig(
            interval_seconds=float(self.values["FLUSH_INTERVAL"]),
            min_interval_seconds=float(self.values["MIN_FLUSH_INTERVAL"]),
            compact_ratio=float(self.values["COMPACT_RATIO"]),
            compact_deltas=int(self.values["COMPACT_DELTAS"]),
            keep_previous=bool(self.values["KEEP_PREVIOUS"]),
            keep_snapshots=int(self.values["KEEP_SNAPSHOTS"]),
            keep_max_age_seconds=self.values["KEEP_SNAPSHOTS_MAX_AGE"],
            keep_every_flush_seconds=self.values["KEEP_EVERY_FLUSH"],
            keep_daily=int(self.values["KEEP_DAILY"]),
            keep_pre_restore=int(self.values["KEEP_PRE_RESTORE"]),
        )

    def signing_keys(self) -> list[bytes]:
        """The key snapshots are signed with, then older keys they may verify with; empty when disabled.

        By default the key is derived from SECRET_KEY with a fixed salt, and
        SECRET_KEY_FALLBACKS keep verifying snapshots written before a key
        rotation. ``SIGNING_KEY`` replaces SECRET_KEY as the secret (so that
        several deployments with different SECRET_KEYs can share a bucket);
        ``False`` disables signing and verification.
        """
        explicit = self.values["SIGNING_KEY"]
        if explicit is False:
            return []
        if explicit:
            secrets = [str(explicit)]
        else:
            secrets = [django_settings.SECRET_KEY, *getattr(django_settings, "SECRET_KEY_FALLBACKS", [])]
        return [salted_hmac(SIGNING_SALT, "snapshots", secret=s, algorithm="sha256").digest() for s in secrets]

    @property
    def replica(self) -> bool:
        """True on a read replica's host (``ROLE = "replica"``): it follows the bucket and never writes it."""
        return bool(self.values["ROLE"] == "replica")

    @property
    def local_path(self) -> Path:
        """The local backend's directory: ``LOCAL_PATH``, else ``<BASE_DIR>/.buckethead``."""
        if self.values["LOCAL_PATH"]:
            return Path(self.values["LOCAL_PATH"])
        return _project_dir() / ".buckethead"

    @property
    def local_dir(self) -> LocalDir:
        """Where the host's database lives: ``LOCAL_DIR``, else under ``/dev/shm`` where it has room, else under
        ``<BASE_DIR>/.buckethead-host`` (beside the local backend's bucket, never in it). Only call when `errors`
        is empty."""
        configured = self.values["LOCAL_DIR"]
        return choose_local_dir(
            Path(configured) if configured else None,
            host_identity(self.bucket_config().identity, replica=self.replica),
            _project_dir() / ".buckethead-host",
        )

    def describe(self) -> dict[str, Any]:
        """The values with secrets masked, for status output and logs."""
        return {k: ("********" if k in _SECRETS and v else v) for k, v in self.values.items()}


def _project_dir() -> Path:
    return Path(getattr(django_settings, "BASE_DIR", None) or Path.cwd())


def get_settings(environ: Mapping[str, str] | None = None) -> BucketHeadSettings:
    """Read and validate the configuration now (cheap; call it whenever settings may have changed)."""
    environ = os.environ if environ is None else environ
    raw = getattr(django_settings, "BUCKETHEAD", {}) or {}
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(
                "E001", f"settings.BUCKETHEAD must be a dict, not {type(raw).__name__}.", "Write BUCKETHEAD = {...}."
            )
        )
        raw = {}
    values = dict(DEFAULTS)
    sources = dict.fromkeys(DEFAULTS, "default")
    for key in DEFAULTS:
        env_value = environ.get(ENV_PREFIX + key)
        if env_value is not None and key not in raw:
            values[key] = env_value
            sources[key] = f"environment variable {ENV_PREFIX}{key}"
    for key, value in raw.items():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            problems.append(
                Problem(
                    "E001",
                    f"BUCKETHEAD has an unknown key {key!r}.",
                    hint + "Valid keys: " + ", ".join(DEFAULTS) + ".",
                )
            )
            continue
        values[key] = value
        sources[key] = f"settings.BUCKETHEAD[{key!r}]"
    _coerce(values, sources, problems)
    _validate(values, sources, problems)
    return BucketHeadSettings(values=values, sources=sources, problems=problems)


def _coerce(values: dict[str, Any], sources: dict[str, str], problems: list[Problem]) -> None:
    """Turn strings from the environment into the type of each default; report what does not convert."""
    for key, default in DEFAULTS.items():
        value = values[key]
        if value is None and key in _NONE_TURNS_OFF and sources[key] != "default":
            continue  # None given on purpose: the rule is off
        if value is None or (value == "" and default in (None, "")):
            values[key] = default  # an empty environment variable means "not set"
            continue
        try:
            values[key] = _parser(key, default)(value)
        except (TypeError, ValueError):
            problems.append(
                Problem(
                    "E004",
                    f"BUCKETHEAD {key!r} has the value {value!r} (from {sources[key]}), which is not valid.",
                    _type_hint(key, default),
                )
            )
            values[key] = default


def _validate(values: dict[str, Any], sources: dict[str, str], problems: list[Problem]) -> None:
    backend = values["BACKEND"]
    if backend not in BACKENDS:
        problems.append(
            Problem(
                "E002",
                f"BUCKETHEAD 'BACKEND' is {backend!r} (from {sources['BACKEND']}).",
                "Set it to 'local' (a directory, the default) or 's3' (S3, Cloudflare R2, MinIO).",
            )
        )
        return
    for key in _POSITIVE:
        if isinstance(values[key], (int, float)) and values[key] <= 0:
            problems.append(
                Problem("E004", f"BUCKETHEAD {key!r} must be greater than 0, not {values[key]!r}.", _type_hint(key, 1))
            )
    for key in sorted(_NOT_NEGATIVE):
        if values[key] < 0:
            problems.append(
                Problem(
                    "E004",
                    f"BUCKETHEAD {key!r} must be 0 or more, not {values[key]!r}.",
                    f"Use a number of seconds, 0 or more (the default is {DEFAULTS[key]!r}).",
                )
            )
    _validate_writer_url(values, sources, problems)
    if backend == "s3":
        if not values["BUCKET"]:
            problems.append(
                Problem(
                    "E003",
                    "BUCKETHEAD 'BACKEND' is 's3' but no 'BUCKET' is set.",
                    "Set BUCKETHEAD['BUCKET'] (or the environment variable BUCKETHEAD_BUCKET) to the bucket name.",
                )
            )
        if values["ACCOUNT_ID"] and values["ENDPOINT_URL"]:
            problems.append(
                Problem(
                    "E005",
                    "BUCKETHEAD sets both 'ACCOUNT_ID' and 'ENDPOINT_URL'.",
                    "For Cloudflare R2 set only ACCOUNT_ID (the endpoint is derived from it); for other services "
                    "set only ENDPOINT_URL.",
                )
            )
        if not values["ACCESS_KEY_ID"] or not values["SECRET_ACCESS_KEY"]:
            problems.append(
                Problem(
                    "W001",
                    "BUCKETHEAD 'BACKEND' is 's3' but 'ACCESS_KEY_ID' / 'SECRET_ACCESS_KEY' are not both set.",
                    "boto3 will look for credentials itself (AWS_* environment variables, ~/.aws, an instance "
                    "role). For R2, set BUCKETHEAD_ACCESS_KEY_ID and BUCKETHEAD_SECRET_ACCESS_KEY from an R2 API "
                    "token.",
                    error=False,
                )
            )
        if values["ACCOUNT_ID"] and 0 <= values["MIN_FLUSH_INTERVAL"] < 1:
            problems.append(
                Problem(
                    "W002",
                    "BUCKETHEAD 'MIN_FLUSH_INTERVAL' is under 1 second on Cloudflare R2.",
                    "R2 accepts about one write per second to the same key and answers faster writes with HTTP "
                    "429; set MIN_FLUSH_INTERVAL to 1 or more.",
                    error=False,
                )
            )
    if not any(p.error for p in problems):
        try:
            BucketHeadSettings(values, sources).bucket_config()
            BucketHeadSettings(values, sources).snapshot_config()
        except ValueError as exc:
            problems.append(Problem("E006", f"BUCKETHEAD is not valid: {exc}", "Fix the value the message names."))


def _validate_writer_url(values: dict[str, Any], sources: dict[str, str], problems: list[Problem]) -> None:
    writer_url = values["WRITER_URL"]
    if writer_url and not str(writer_url).startswith(("http://", "https://")):
        problems.append(
            Problem(
                "E007",
                f"BUCKETHEAD 'WRITER_URL' is {writer_url!r} (from {sources['WRITER_URL']}): not an http(s) address.",
                _HINTS["WRITER_URL"],
            )
        )


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _parse_autostart(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("", "auto", "none"):
        return None
    return _parse_bool(value)


def _parse_health_details(value: Any) -> str:
    """One of `HEALTH_DETAILS`; True means "public" and False "never" (also as words in the environment)."""
    if isinstance(value, bool):
        return "public" if value else "never"
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().lower()
    if not text:
        return str(DEFAULTS["HEALTH_DETAILS"])  # an empty environment variable means "not set"
    if text in HEALTH_DETAILS:
        return text
    if text in _TRUE:
        return "public"
    if text in _FALSE:
        return "never"
    raise ValueError(value)


def _parser(key: str, default: Any) -> Callable[[Any], Any]:
    """How the value of ``key`` is read: its own parser, else the type of its default."""
    special: dict[str, Callable[[Any], Any]] = {
        "AUTOSTART": _parse_autostart,
        "SIGNING_KEY": _parse_signing_key,
        "KEEP_SNAPSHOTS_MAX_AGE": _parse_optional_seconds,
        "KEEP_EVERY_FLUSH": _parse_optional_seconds,
        "HEALTH_DETAILS": _parse_health_details,
        "LEASE_CONFLICT": lambda value: _parse_choice(value, engine_config.LEASE_CONFLICT_CHOICES),
        "ROLE": lambda value: _parse_choice(value, engine_config.ROLE_CHOICES),
        "REPLICA_POLL_INTERVAL": _parse_optional_seconds,
        "LOCAL_PATH": Path,
        "LOCAL_DIR": Path,
    }
    if key in special:
        return special[key]
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, (int, float)):
        return type(default)
    return str


def _parse_optional_seconds(value: Any) -> float | None:
    """A number of seconds, or None ('none' or 'off' in the environment) to turn the rule off."""
    if isinstance(value, str) and value.strip().lower() in {"none", "off"}:
        return None
    return float(value)


def _parse_choice(value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(value)
    return text


def _parse_signing_key(value: Any) -> str | bool | None:
    """A secret string, or False to disable signing ('off', 'false', '0' in the environment)."""
    if value is False:
        return False
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(value)
    return False if value.strip().lower() in _FALSE else value


#: What to write instead, for the keys whose values are not plain booleans, numbers or strings.
_HINTS = {
    "SIGNING_KEY": "Use a secret string, False to disable signing, or None to derive the key from SECRET_KEY.",
    "KEEP_SNAPSHOTS_MAX_AGE": (
        "Use a number of seconds (for example 86400 for a day), or None ('none' in the environment) for no age rule."
    ),
    "KEEP_EVERY_FLUSH": (
        "Use a number of seconds (for example 3600 for an hour), or None ('none' in the environment) to keep every "
        "flush as long as its generation."
    ),
    "AUTOSTART": (
        "Use True (always start a writer), False (never) or None / 'auto' (decide from how Django was started)."
    ),
    "HEALTH_DETAILS": (
        "Use 'staff' (only staff users see the health view's details), 'public' or True (anyone does), or 'never' "
        "or False (nobody does)."
    ),
    "LEASE_CONFLICT": (
        "Use 'exit' (a process on a second host stops with WriterConflict) or 'read-only' (it serves a read-only "
        "copy of the latest snapshot)."
    ),
    "ROLE": (
        "Use 'writer' (the default: this host's processes read and write the database, and ship it to the bucket) "
        "or 'replica' (a read replica: it follows what the writer flushes, and refuses writes)."
    ),
    "REPLICA_POLL_INTERVAL": (
        "Use a number of seconds (for example 5), or None ('none' in the environment) to poll every FLUSH_INTERVAL."
    ),
    "WRITER_URL": "Use the writer host's public address, for example 'https://www.example.com'.",
    "LOCAL_DIR": "Use the path of a local directory (by default one under /dev/shm, else under the project).",
}


def _type_hint(key: str, default: Any) -> str:
    if key in _HINTS:
        return _HINTS[key]
    if isinstance(default, bool):
        return f"Use True or False (in the environment: {', '.join(sorted(_TRUE | _FALSE))})."
    if isinstance(default, (int, float)):
        return f"Use a positive number, for example {default!r}."
    return "Use a string."
