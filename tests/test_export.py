"""``manage.py buckethead export``: the example project graduates onto PostgreSQL, Redis and S3.

Every server is real and started by the tests: PostgreSQL from Debian's
package (`tests.postgres_server`), redis-server (`tests.redis_server`) and
moto over HTTP for both the BucketHead bucket and the target bucket. The
site is the example project with the export targets as extra aliases
(``tests/sites/export_site.py``), its data made by ``export_data.seed()``;
after the export, ``export_data.check()`` runs the same project on the
graduated settings (``graduated_site.py``: PostgreSQL, django-redis,
S3Storage, no BucketHead) and reports what it sees.

Without PostgreSQL or redis-server the tests are skipped on a developer's
machine, but fail in CI (where ``CI`` is set), as the browser tests do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management.base import CommandError

from buckethead_django.engine import BucketConfig
from buckethead_django.export import ExportError
from buckethead_django.export.files import SHA256_METADATA, target_storage

from .commands_helpers import call, call_json, django_database, env_for, error_lines, run
from .conftest import s3_config
from .moto_server import MotoServer, free_port
from .postgres_server import PostgresServer, postgres_bin
from .redis_server import RedisServer, redis_binary
from .servers import EXAMPLE, example_env, manage

SITES = Path(__file__).resolve().parent / "sites"
#: Cache values over this many bytes are FileStore blobs in the site: small, so that the test's blob is small too.
KV_LIMIT = 65536
#: The cache entries seed() makes that are exported (not "short", expired; not the application's KV key).
EXPORTED_ENTRIES = 6


def unavailable(reason: str) -> None:
    """Skip, except in CI, where an export test that cannot run is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the export tests must run)")
    pytest.skip(reason)


# -- servers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root, and runuser is missing to start PostgreSQL as its own user")
    server = PostgresServer(bindir).start()  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    exe = redis_binary()
    if exe is None:
        unavailable("redis-server is not installed (Debian: apt-get install -y redis-server)")
    server = RedisServer(exe).start()  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PostgreSQL database that `migrate --database pg` made, the template of every test's target database."""
    name = postgres.create_database("migrated")
    state = tmp_path_factory.mktemp("migrate-pg")
    manage(state, "migrate", "--database", "pg", "--noinput", "-v", "0", **site_env(None), **pg_env(postgres, name))
    return name


def pg_env(postgres: PostgresServer, name: str) -> dict[str, str]:
    return {"EXPORT_PG_NAME": name, "EXPORT_PG_HOST": postgres.host, "EXPORT_PG_PORT": str(postgres.port)}


def site_env(source: BucketConfig | None, **extra: str) -> dict[str, str]:
    """The environment of the example project as it moves: its BucketHead bucket on moto, the export aliases."""
    return {
        **(env_for(source) if source is not None else {}),
        "BUCKETHEAD_KV_MAX_VALUE_BYTES": str(KV_LIMIT),
        "DJANGO_SETTINGS_MODULE": "export_site",
        "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{SITES}",
        **extra,
    }


# -- the site and its targets --------------------------------------------------------------------------------


@dataclass
class Site:
    """The example project on a BucketHead bucket, seeded: its state directory, environment and what it holds."""

    state: Path
    config: BucketConfig
    env: dict[str, str]
    seeded: dict[str, Any]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return manage(self.state, *args, check=False, **{**self.env, **env})


def make_site(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer, name: str, **seed_env: str) -> Site:
    state = tmp_path_factory.mktemp(name)
    config = s3_config(moto)
    env = site_env(config)
    manage(state, "migrate", "--noinput", "-v", "0", **env)
    seeded = manage(state, "shell", "-c", "import export_data; export_data.seed()", **env, **seed_env)
    return Site(state, config, env, json.loads(seeded.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Site:
    """The example project with users, documents and files, an admin log entry and cache entries."""
    return make_site(tmp_path_factory, moto, "site")


@dataclass
class Target:
    """A fresh migrated PostgreSQL database, a redis database emptied, an empty bucket: where the site goes."""

    postgres: PostgresServer
    database: str
    redis: RedisServer
    bucket: str
    moto: MotoServer

    @property
    def env(self) -> dict[str, str]:
        return {
            **pg_env(self.postgres, self.database),
            "EXPORT_REDIS_URL": self.redis.url(0),
            "EXPORT_S3_BUCKET": self.bucket,
            "EXPORT_S3_ENDPOINT_URL": self.moto.endpoint_url,
        }

    def rows(self) -> dict[str, Any]:
        """Every table's rows, sorted, and every sequence's position: equal means the database did not change."""
        import psycopg

        with psycopg.connect(
            host=self.postgres.host, port=self.postgres.port, user="postgres", dbname=self.database
        ) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            found: dict[str, Any] = {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}
            found["sequences"] = sorted(conn.execute("SELECT sequencename, last_value FROM pg_sequences").fetchall())
        return found

    def cache(self) -> dict[bytes, tuple[bytes, bool]]:
        """Every redis key: its raw value, and whether it expires."""
        import redis as redis_client

        client = redis_client.Redis.from_url(self.redis.url(0))
        return {key: (client.get(key), client.pttl(key) > 0) for key in client.keys("*")}

    def objects(self) -> dict[str, tuple[str, int, str | None]]:
        """Every object in the target bucket: ETag, size, and the content hash the export recorded."""
        client = self.moto.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                meta = client.head_object(Bucket=self.bucket, Key=obj["Key"])["Metadata"]
                found[obj["Key"]] = (obj["ETag"], obj["Size"], meta.get(SHA256_METADATA))
        return found


@pytest.fixture
def target(postgres: PostgresServer, migrated: str, redis: RedisServer, moto: MotoServer) -> Iterator[Target]:
    name = f"target_{uuid.uuid4().hex[:10]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{migrated}"')
    bucket = f"graduated-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    redis.command("FLUSHALL")
    yield Target(postgres, name, redis, bucket, moto)
    postgres.drop_database(name)


ALL = ("--database", "pg", "--cache", "redis", "--storage", "s3")


def export(site: Site, target: Target, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py buckethead export <args>`` as a real process of the site."""
    return run(site.state, "export", *args, **{**site.env, **target.env, **env})


def export_json(site: Site, target: Target, *args: str) -> dict[str, Any]:
    done = export(site, target, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def exported_rows(data: dict[str, Any]) -> dict[str, int]:
    return {m["model"]: m.get("copied", m["rows"]) for m in data["database"]["models"]}


# -- (a) the example project graduates --------------------------------------------------------------------


def test_the_example_project_runs_on_postgres_redis_and_s3_after_the_export(site: Site, target: Target) -> None:
    data = export_json(site, target, *ALL)
    seeded = site.seeded
    assert exported_rows(data) == seeded["counts"], "every model's rows, each once"
    assert data["database"]["method"] == "copy"
    assert {"contenttypes.contenttype", "auth.permission"} <= set(data["database"]["rekeyed"]), (
        "the content types and permissions migrate made in PostgreSQL took the site's ids"
    )
    assert data["cache"]["copied"] == EXPORTED_ENTRIES
    assert data["cache"]["application_keys"]["keys"] == ["feature:checkout"]
    assert (data["files"]["files"], data["files"]["uploaded"], data["files"]["copied"]) == (4, 3, 1)

    checked = manage(
        site.state,
        "shell",
        "-c",
        f"import export_data; export_data.check({json.dumps(json.dumps(seeded))})",
        **{**site.env, **target.env, "DJANGO_SETTINGS_MODULE": "graduated_site"},
    )
    seen = json.loads(checked.stdout.strip().splitlines()[-1])
    assert seen["authenticated"] == {name: name for name in seeded["users"]}, "every user logs in with the password"
    assert seen["wrong_password"]
    assert (seen["bob_may_add"], seen["alice_may_change"], seen["alice_may_delete"]) == (True, True, False), (
        "user and group permissions point at the right permissions, and those at the right content type"
    )
    assert seen["document_content_type"] == seeded["document_content_type"], "the site's content type ids"
    assert seen["log_entry"] == ["demo", "document", "report.txt"], "the admin log entry points at its document"
    assert seen["counts"] == seeded["counts"]
    for name, expected in seeded["documents"].items():
        assert seen["files"][name] == {
            "opened": expected["sha256"],
            "fetched": expected["sha256"],
            "size": expected["size"],
        }, f"{name} opens, and downloads from its URL, with the same bytes under the same name"
    assert seen["storage_names"] == sorted(seeded["documents"]), "no other object: no content-addressed names"
    assert target.objects().keys() == set(seeded["documents"])
    cache = seen["cache"]
    assert cache["plain"] == {"a": 1, "b": [1, 2]}
    assert cache["with-ttl"] == "still here"
    assert 3000 < cache["with-ttl ttl"] <= 3600, "it keeps the time it had left"
    assert cache["nothing in"], "a cached None is an entry too"
    assert cache["big"] == seeded["big_cache_bytes"], "a value over the KV limit came from its blob"
    assert (cache["versioned"], cache["versioned v1"]) == ("v2", None), "an entry keeps its version"
    assert cache["counter"] == 41
    assert cache["short"] == "absent", "an expired entry is not exported"
    assert cache["feature:checkout"] == "absent", "an application KV key is not a cache entry"
    ids = seen["new_ids"]
    assert ids["document"] > ids["max_document_id"], "the sequences were reset: a new row gets a fresh id"
    assert ids["user"] > ids["max_user_id"]


# -- (b) the dry run ---------------------------------------------------------------------------------------


def test_a_dry_run_reports_counts_and_sizes_and_writes_nothing(site: Site, target: Target) -> None:
    before = target.rows()
    data = export_json(site, target, *ALL, "--dry-run")
    assert data["dry_run"]
    assert exported_rows(data) == site.seeded["counts"]
    assert data["database"]["rows"] == sum(site.seeded["counts"].values())
    assert data["database"]["unapplied_migrations"] == []
    assert data["cache"]["entries"] == EXPORTED_ENTRIES
    assert data["cache"]["bytes"] > site.seeded["big_cache_bytes"], "the blob's bytes count"
    assert data["cache"]["application_keys"] == {"count": 1, "bytes": 2, "keys": ["feature:checkout"]}
    documents = site.seeded["documents"]
    assert (data["files"]["files"], data["files"]["bytes"]) == (4, sum(d["size"] for d in documents.values()))
    assert (data["files"]["contents"], data["files"]["present"]) == (3, 0)

    text = export(site, target, *ALL, "--dry-run")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "Dry run: nothing was written anywhere."
    assert any(line.startswith("Database: ") and "(postgresql, migrated)" in line for line in lines)
    assert any(line.split()[:2] == ["demo.document", "demo_document"] for line in lines)
    assert any(line.startswith(f"Cache: {EXPORTED_ENTRIES} entries") for line in lines)
    assert any(line.startswith("Files: 4 files") for line in lines)

    assert target.rows() == before, "nothing was written to PostgreSQL"
    assert target.cache() == {}, "nor to redis"
    assert target.objects() == {}, "nor to the bucket"


# -- (c) twice: the same target ----------------------------------------------------------------------------


def test_exporting_twice_leaves_the_same_target(site: Site, target: Target) -> None:
    first = export_json(site, target, *ALL)
    state = (target.rows(), target.cache(), target.objects())
    second = export_json(site, target, *ALL)
    assert (target.rows(), target.cache(), target.objects()) == state, "no duplicate row, entry or file"
    assert second["database"]["rekeyed"] == {}, "the ids are the site's already"
    assert exported_rows(second) == site.seeded["counts"] == exported_rows(first)
    assert (second["files"]["skipped"], second["files"]["uploaded"], second["files"]["copied"]) == (4, 0, 0)
    assert second["cache"]["copied"] == EXPORTED_ENTRIES


def test_migrate_migrates_a_new_database_first(site: Site, target: Target) -> None:
    empty = target.postgres.create_database(f"empty_{uuid.uuid4().hex[:10]}")
    try:
        refused = export(site, target, "--database", "pg", EXPORT_PG_NAME=empty)
        assert refused.returncode == 1
        assert "CommandError: database 'pg' is not migrated: " in refused.stderr
        done = export(site, target, "--database", "pg", "--migrate", "--json", EXPORT_PG_NAME=empty)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert exported_rows(data) == site.seeded["counts"]
        assert data["skipped"] == ["cache", "files"]
    finally:
        target.postgres.drop_database(empty)


# -- (d) killed half way, then run again --------------------------------------------------------------------

MANY_FILES = 200


@pytest.fixture(scope="module")
def many_files_site(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Site:
    return make_site(tmp_path_factory, moto, "many-files", EXPORT_SEED_FILES=str(MANY_FILES), EXPORT_SEED_FILE_KB="128")


def test_an_export_killed_half_way_completes_when_run_again(
    many_files_site: Site, target: Target, tmp_path: Path
) -> None:
    site = many_files_site
    names = set(site.seeded["documents"])
    client = target.moto.client()
    env = example_env(site.state, **site.env, **target.env, TMPDIR=str(tmp_path))  # the killed copy stays here
    log = tmp_path / "killed.log"
    with log.open("wb") as output:
        killed = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "manage.py"), "buckethead", "export", *ALL, "--jobs", "1"],
            env=env,
            cwd=EXAMPLE,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    there = 0
    deadline = time.monotonic() + 120
    while killed.poll() is None and time.monotonic() < deadline:
        there = client.list_objects_v2(Bucket=target.bucket).get("KeyCount", 0)
        if there >= 20:
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL, f"it finished before it could be killed:\n{log.read_text()}"
    assert 20 <= there < len(names), "killed part way through the files"

    data = export_json(site, target, *ALL)
    done = data["files"]
    assert done["skipped"] >= there, "what the killed run uploaded is not uploaded again"
    assert done["skipped"] + done["uploaded"] + done["copied"] == len(names)
    assert data["database"]["rekeyed"] == {}, "the killed run had committed the rows (one transaction)"
    assert exported_rows(data) == site.seeded["counts"]
    objects = target.objects()
    assert objects.keys() == names, "every file, once, under its own name"
    for name, expected in site.seeded["documents"].items():
        assert objects[name][1:] == (expected["size"], expected["sha256"])
    counts = {table: len(rows) for table, rows in target.rows().items() if table in ("auth_user", "demo_document")}
    assert counts == {
        "auth_user": site.seeded["counts"]["auth.user"],
        "demo_document": site.seeded["counts"]["demo.document"],
    }, "no row twice"


# -- (e) the source is read only ------------------------------------------------------------------------------


def test_the_bucket_and_the_hosts_database_are_unchanged_by_an_export(site: Site, target: Target) -> None:
    def source_state() -> tuple[dict[str, str], dict[str, str]]:
        client = target.moto.client()
        objects = {
            o["Key"]: o["ETag"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=site.config.bucket)
            for o in page.get("Contents", [])
        }
        host = {
            str(p.relative_to(site.state)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((site.state / "host").rglob("*"))
            if p.is_file()
        }
        return objects, host

    before = source_state()
    done = export(site, target, *ALL)
    assert done.returncode == 0, done.stderr
    assert "BucketSQLite started as read-only" in done.stderr, "it read a private copy of the latest snapshot"
    assert "BucketHead started as" not in done.stderr, "it never attached to the host's database"
    assert source_state() == before, "every object of the bucket (and its ETag) and every file of the host is as it was"


# -- (f) bad input ---------------------------------------------------------------------------------------------


@pytest.fixture
def aliases(settings, moto: MotoServer, tmp_path: Path) -> dict[str, str]:
    """Cache and storage aliases of every kind, good and bad, in this process's settings."""
    bucket = f"graduated-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    s3 = {
        "endpoint_url": moto.endpoint_url,
        "region_name": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
    }
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings.CACHES = {
        "default": {"BACKEND": "buckethead_django.cache.BucketHeadCache", "LOCATION": f"bad-input-{uuid.uuid4().hex}"},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis-down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1},
        },
    }
    settings.STORAGES = {
        "default": {"BACKEND": "buckethead_django.storage.BucketHeadStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "disk": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
        "s3": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**s3, "bucket_name": bucket}},
        "s3-no-bucket": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**s3, "bucket_name": "not-there"}},
        "s3-down": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {**s3, "bucket_name": bucket, "endpoint_url": nowhere, "client_config": _one_attempt()},
        },
    }
    return {"bucket": bucket}


def _one_attempt() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1)


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        call("export", *args)
    return str(info.value)


def test_bad_input_is_one_clear_error_and_writes_nothing(
    aliases: dict[str, str], postgres: PostgresServer, django_db_blocker: Any, moto: MotoServer
) -> None:
    assert refused().startswith("nothing to export to: give --database ALIAS, --cache ALIAS and/or --storage ALIAS")
    assert "no database in settings.DATABASES has ENGINE 'buckethead_django.db'" in refused("--database", "default")

    fresh = postgres.create_database(f"fresh_{uuid.uuid4().hex[:10]}")
    pg = {"ENGINE": "django.db.backends.postgresql", "USER": "postgres", "HOST": postgres.host}
    with (
        django_db_blocker.unblock(),
        django_database("bh", ENGINE="buckethead_django.db"),
        django_database("pg-new", **pg, PORT=str(postgres.port), NAME=fresh),
        django_database("pg-down", **pg, PORT=str(free_port()), NAME="nothing"),
    ):
        assert refused("--database", "nope").startswith(
            "there is no database 'nope' in settings.DATABASES (it has: default, bh, pg-new, pg-down)"
        )
        assert refused("--database", "bh").startswith("--database 'bh' is the BucketHead database itself")
        assert refused("--database", "pg-down").startswith("cannot connect to database 'pg-down' (postgresql on ")
        unmigrated = refused("--database", "pg-new")
        assert unmigrated.startswith("database 'pg-new' is not migrated: ")
        assert "Run `manage.py migrate --database pg-new` first (or pass --migrate" in unmigrated
        assert refused("--database", "pg-new", "--from-database", "default").startswith(
            "--from-database 'default' is not a BucketHead database"
        )
    postgres.drop_database(fresh)

    assert refused("--cache", "nope").startswith("there is no cache 'nope' in settings.CACHES")
    assert refused("--cache", "default").startswith("cache 'default' is BucketHead's own cache")
    assert refused("--cache", "locmem=redis-down").startswith("cache 'locmem' is not a BucketHead cache")
    assert refused("--cache", "redis-down").startswith("cannot reach cache 'redis-down' (django_redis.cache.RedisCache")

    assert refused("--storage", "nope").startswith("there is no storage 'nope' in settings.STORAGES")
    assert refused("--storage", "default").startswith("storage 'default' is BucketHead's own storage")
    assert refused("--storage", "disk").startswith(
        "storage 'disk' is django.core.files.storage.FileSystemStorage, not an S3 storage"
    )
    assert refused("--storage", "s3-no-bucket").startswith(
        f"storage 's3-no-bucket': bucket 'not-there' at {moto.endpoint_url} does not exist; create it first."
    )
    assert refused("--storage", "s3-down").startswith("cannot reach storage 's3-down' (bucket ")
    assert moto.client().list_objects_v2(Bucket=aliases["bucket"]).get("KeyCount") == 0, "nothing was written"


def test_a_storage_on_buckethead_s_own_bucket_is_refused(aliases: dict[str, str], moto: MotoServer) -> None:
    own = BucketConfig(bucket=aliases["bucket"], endpoint_url=moto.endpoint_url, region="us-east-1")
    with pytest.raises(ExportError, match=r"writes bucket '.*', which is BucketHead's own bucket"):
        target_storage("s3", own)
    assert target_storage("s3", s3_config(moto)).bucket_name == aliases["bucket"], "another bucket is fine"


def test_a_mistake_exits_with_status_1_and_one_line(tmp_path: Path) -> None:
    done = run(tmp_path, "export", "--storage", "nope")
    assert done.returncode == 1
    assert error_lines(done) == [
        "CommandError: there is no storage 'nope' in settings.STORAGES (it has: default, staticfiles)"
    ]
    usage = run(tmp_path, "export", "--jobs", "0")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr + done.stderr


# -- how cache entries find their keys ------------------------------------------------------------------------


def _custom_key(key: str, key_prefix: str, version: int) -> str:
    return f"{version}/{key_prefix}/{key}"


def test_cache_entries_keep_their_key_version_and_time_left_in_any_cache(settings) -> None:
    """In this process: BucketHead caches (the test run's engine) into local-memory caches, no server needed."""
    run_id = uuid.uuid4().hex[:8]
    bucket_head = "buckethead_django.cache.BucketHeadCache"
    locmem = "django.core.cache.backends.locmem.LocMemCache"
    settings.CACHES = {
        "default": {"BACKEND": bucket_head, "LOCATION": f"main-{run_id}"},
        "sessions": {"BACKEND": bucket_head, "LOCATION": f"sessions-{run_id}", "KEY_PREFIX": "s"},
        "custom": {"BACKEND": bucket_head, "LOCATION": f"custom-{run_id}", "KEY_FUNCTION": _custom_key},
        "new": {"BACKEND": locmem, "LOCATION": f"new-{run_id}", "KEY_PREFIX": "moved"},
        "new-sessions": {"BACKEND": locmem, "LOCATION": f"new-sessions-{run_id}", "KEY_PREFIX": "s"},
        "new-custom": {"BACKEND": locmem, "LOCATION": f"new-custom-{run_id}", "KEY_FUNCTION": _custom_key},
        "plain-custom": {"BACKEND": locmem, "LOCATION": f"plain-custom-{run_id}"},
    }
    caches["default"].set("k", "v", None)
    caches["default"].set("k", "v3", 600, version=3)
    caches["default"].set("big", b"x" * (1024 * 1024 + 10), None)  # over the test engine's KV limit: a blob
    caches["sessions"].set("session:1", {"user": 1}, 120)
    caches["custom"].set("c", 7, None)

    refusal = refused("--cache", "new")
    assert refusal.startswith("--cache new: which BucketHead cache should go there? the site has several")
    assert "--cache default=ALIAS --cache sessions=ALIAS --cache custom=ALIAS" in refusal
    assert "give cache 'plain-custom' the same KEY_FUNCTION and KEY_PREFIX" in refused("--cache", "custom=plain-custom")

    data = call_json(
        "export", "--cache", "default=new", "--cache", "sessions=new-sessions", "--cache", "custom=new-custom"
    )
    assert [(r["from"], r["to"], r["copied"]) for r in data["cache"]["routes"]] == [
        ("default", "new", 3),
        ("sessions", "new-sessions", 1),
        ("custom", "new-custom", 1),
    ]
    assert data["skipped"] == ["database", "files"]
    new = caches["new"]
    assert (new.get("k"), new.get("k", version=3), len(new.get("big"))) == ("v", "v3", 1024 * 1024 + 10), (
        "the target's own KEY_PREFIX applies; versions are kept"
    )
    assert caches["new-sessions"].get("session:1") == {"user": 1}
    assert caches["new-custom"].get("c") == 7, "a KEY_FUNCTION of the site's own: the same keys"
    deadline = new._expire_info[new.make_key("k", version=3)]  # LocMemCache's own record of the expiry
    assert 590 < deadline - time.time() <= 600, "the time it had left, not a new timeout"
    for alias in ("default", "sessions", "custom"):
        caches[alias].clear()
