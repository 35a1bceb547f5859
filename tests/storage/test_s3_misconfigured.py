"""S3 faults of the configuration, not of an object, against moto's server over HTTP.

Missing credentials, a bucket that does not exist at the endpoint and an endpoint that is
no URL are ``StorageMisconfigured`` (a worker that meets one hands its work back); the
write check leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from storage.errors import StorageMisconfigured
from storage.options import StorageOptions
from storage.s3 import S3Storage

pytestmark = pytest.mark.s3


def _storage(endpoint_url: str) -> S3Storage:
    return S3Storage(StorageOptions(endpoint_url=endpoint_url, region="us-east-1"))


def test_missing_credentials_are_a_misconfiguration_that_says_how_to_fix_it(
    s3_endpoint_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(StorageMisconfigured, match="no usable AWS credentials.*AWS_ACCESS_KEY_ID"):
        _storage(s3_endpoint_url).read(f"s3://{s3_bucket}/scans/a.png")


def test_a_bucket_missing_at_the_endpoint_is_a_misconfiguration(
    s3_endpoint_url: str, s3_credentials: None
) -> None:
    with pytest.raises(StorageMisconfigured, match="'panchro-nowhere' does not exist"):
        list(_storage(s3_endpoint_url).list("s3://panchro-nowhere/scans"))


def test_an_endpoint_that_is_no_url_is_a_misconfiguration(s3_credentials: None) -> None:
    with pytest.raises(StorageMisconfigured, match="PANCHRO_S3_ENDPOINT_URL"):
        _storage("notaurl").read("s3://bucket/scans/a.png")


def test_write_check_passes_and_leaves_no_object_and_no_upload(
    s3_endpoint_url: str, s3_bucket: str, s3_credentials: None
) -> None:
    raw: Any = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")

    _storage(s3_endpoint_url).check_writable(f"s3://{s3_bucket}/colour")

    assert raw.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_write_check_of_a_missing_bucket_is_a_misconfiguration(
    s3_endpoint_url: str, s3_credentials: None
) -> None:
    with pytest.raises(StorageMisconfigured):
        _storage(s3_endpoint_url).check_writable("s3://panchro-nowhere/colour")
