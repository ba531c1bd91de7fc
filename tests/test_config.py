"""BucketConfig and SnapshotConfig, including the Cloudflare R2 shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest

from buckethead_django.engine import BucketConfig, LocalObjectStore, S3ObjectStore, SnapshotConfig, open_object_store

from .conftest import s3_config

ACCOUNT = "0123456789abcdef0123456789abcdef"


def test_r2_shortcut_derives_endpoint_and_region() -> None:
    cfg = BucketConfig.for_r2(account_id=ACCOUNT, bucket="media", access_key_id="ak", secret_access_key="sk")
    assert cfg.endpoint_url == f"https://{ACCOUNT}.r2.cloudflarestorage.com"
    assert cfg.region == "auto"
    assert cfg.bucket == "media"
    assert cfg.key == "bucketsqlite/snap.db"
    assert cfg.files_prefix == "files/"
    assert "sk" not in repr(cfg), "secrets never appear in reprs or logs"


def test_r2_client_only_sends_checksums_when_required() -> None:
    cfg = BucketConfig.for_r2(account_id=ACCOUNT, bucket="media", access_key_id="ak", secret_access_key="sk")
    client = S3ObjectStore(cfg).client
    assert client.meta.endpoint_url == f"https://{ACCOUNT}.r2.cloudflarestorage.com"
    assert client.meta.region_name == "auto"
    config = client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.signature_version == "s3v4"
    assert config.retries["total_max_attempts"] == 5
    assert config.retries["mode"] == "standard"


def test_uploads_carry_no_checksum_headers_that_r2_rejects(moto) -> None:
    """Over real HTTP: a put sends no CRC checksum or ACL headers (R2 refuses both)."""
    store = S3ObjectStore(s3_config(moto))
    seen: list[dict[str, str]] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers.items()))
    )
    store.put("k", b"payload")
    store.put("k2", b"payload", if_none_match=True)
    assert len(seen) == 2
    for headers in seen:
        lowered = {k.lower() for k in headers}
        assert not any(h.startswith("x-amz-checksum-") for h in lowered), headers
        assert "x-amz-sdk-checksum-algorithm" not in lowered
        assert "x-amz-acl" not in lowered


@pytest.mark.parametrize("account_id", ["", "not an id", "abc/def"])
def test_r2_shortcut_rejects_bad_account_ids(account_id: str) -> None:
    with pytest.raises(ValueError, match="Cloudflare account id"):
        BucketConfig.for_r2(account_id=account_id, bucket="b")


def test_config_errors_say_what_to_set() -> None:
    with pytest.raises(ValueError, match="needs a bucket name, or local_path"):
        BucketConfig()
    with pytest.raises(ValueError, match="must end with '/'"):
        BucketConfig(bucket="b", files_prefix="files")
    with pytest.raises(ValueError, match="snapshot key"):
        BucketConfig(bucket="b", key="dir/")
    with pytest.raises(ValueError, match="interval_seconds"):
        SnapshotConfig(interval_seconds=0)


def test_open_object_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_object_store(BucketConfig.local(tmp_path)), LocalObjectStore)
    assert isinstance(open_object_store(BucketConfig(bucket="b", region="us-east-1")), S3ObjectStore)
    assert BucketConfig.local(str(tmp_path)).local_path == tmp_path
