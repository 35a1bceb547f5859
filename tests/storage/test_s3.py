"""Tests of storage.s3.S3Storage against a real S3 API (moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from storage.base import (
    Storage,
)
from storage.errors import ObjectNotFound, OutputExists, StorageError, StorageUnavailable
from storage.options import StorageOptions
from storage.registry import open_storage
from storage.s3 import S3Storage
from storage.s3_client import S3_MAX_ATTEMPTS, S3_MIN_PART_SIZE
from storage.skips import SKIP_FOLDER_MARKER

pytestmark = pytest.mark.s3

#: Bytes from which the storage under test switches to multipart uploads.
SMALL_THRESHOLD = 1024 * 1024


@pytest.fixture
def s3(s3_endpoint_url: str, s3_credentials: None) -> S3Storage:
    return S3Storage(
        StorageOptions(
            endpoint_url=s3_endpoint_url,
            region="us-east-1",
            addressing_style="path",
            multipart_threshold=SMALL_THRESHOLD,
            multipart_chunksize=S3_MIN_PART_SIZE,
        )
    )


@pytest.fixture
def raw(s3_endpoint_url: str, s3_credentials: None) -> Any:
    """A plain boto3 client, to arrange and inspect the bucket independently of S3Storage."""
    return boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _put_many(raw: Any, bucket: str, keys: list[str]) -> None:
    def put(key: str) -> None:
        raw.put_object(Bucket=bucket, Key=key, Body=key.encode())

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))


def test_s3_storage_satisfies_the_storage_protocol(s3: S3Storage) -> None:
    assert isinstance(s3, Storage)


def test_open_storage_builds_s3_storage_from_plain_values(s3_endpoint_url: str) -> None:
    options = StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path", max_attempts=2)

    storage = open_storage("s3://bucket/scans", options)

    assert isinstance(storage, S3Storage)
    assert storage.options == options
    assert storage.limits.max_attempts == 2
    assert S3Storage().limits.max_attempts == S3_MAX_ATTEMPTS  # unset: the S3 default


def test_s3_storage_refuses_parts_below_the_s3_minimum() -> None:
    with pytest.raises(ValueError, match="multipart_chunksize"):
        S3Storage(StorageOptions(multipart_chunksize=1024))


@pytest.mark.parametrize(
    "options",
    [{"addressing_style": "sideways"}, {"max_attempts": 0}, {"read_timeout": -1.0}],
)
def test_storage_options_refuse_values_out_of_range(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StorageOptions(**options)


def test_visible_buckets_counts_the_buckets_the_credentials_see(
    s3: S3Storage, s3_bucket: str
) -> None:
    assert s3.visible_buckets() >= 1


def test_write_then_read_round_trips_with_content_type(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    uri = f"s3://{s3_bucket}/colour/p001.jpg"
    data = os.urandom(10_000)

    s3.write(uri, data, content_type="image/jpeg")

    assert s3.read(uri) == data
    assert raw.head_object(Bucket=s3_bucket, Key="colour/p001.jpg")["ContentType"] == "image/jpeg"


def test_small_write_is_a_single_put(s3: S3Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/small.tif"
    data = os.urandom(SMALL_THRESHOLD - 1)

    s3.write(uri, data)

    info = s3.stat(uri)
    assert info.checksum == hashlib.md5(data).hexdigest()
    assert (info.size, info.checksum_kind, info.relative) == (len(data), "etag", "small.tif")


def test_large_write_is_a_multipart_upload_of_whole_parts(s3: S3Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/large.tif"
    data = os.urandom(S3_MIN_PART_SIZE + 12345)

    s3.write(uri, io.BytesIO(data), content_type="image/tiff")

    info = s3.stat(uri)
    assert info.checksum.endswith("-2")
    assert info.size == len(data)
    assert s3.read(uri) == data


class _BreaksAfter(io.RawIOBase):
    """A data source that breaks once ``limit`` bytes have been read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.given = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.given >= self.limit:
            raise RuntimeError("source broke midway")
        size = min(size, self.limit - self.given)
        self.given += size
        return b"\0" * size


def test_multipart_write_that_fails_midway_leaves_nothing_visible(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    source = _BreaksAfter(S3_MIN_PART_SIZE + SMALL_THRESHOLD)

    with pytest.raises(RuntimeError, match="midway"):
        s3.write(f"s3://{s3_bucket}/broken.tif", source)  # type: ignore[arg-type]

    assert source.given > S3_MIN_PART_SIZE  # a part had been uploaded
    assert not s3.exists(f"s3://{s3_bucket}/broken.tif")
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_write_with_overwrite_false_refuses_an_existing_key(s3: S3Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/p.jpg"
    s3.write(uri, b"old", overwrite=False)

    with pytest.raises(OutputExists):
        s3.write(uri, b"new", overwrite=False)

    assert s3.read(uri) == b"old"


def test_list_pages_beyond_a_thousand_keys_in_key_order(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    keys = [f"scans/album{index % 7}/p{index:05d}.jpg" for index in range(1200)]
    _put_many(raw, s3_bucket, keys)

    listed = list(s3.list(f"s3://{s3_bucket}/scans"))

    assert [info.relative for info in listed] == sorted(key[len("scans/") :] for key in keys)
    first = listed[0]
    assert first.uri.bucket == s3_bucket
    assert first.uri.key == "scans/" + first.relative
    assert first.checksum == hashlib.md5(first.uri.key.encode()).hexdigest()
    assert first.size == len(first.uri.key)
    assert first.last_modified.utcoffset() is not None


def test_list_stays_inside_the_prefix_and_reports_folder_markers(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    _put_many(raw, s3_bucket, ["scans/a.jpg", "scans/empty/", "scans2/b.jpg", "scansx.jpg"])
    skips: list[tuple[str, str]] = []

    listed = s3.list(f"s3://{s3_bucket}/scans/", on_skip=lambda rel, why: skips.append((rel, why)))

    assert [info.relative for info in listed] == ["a.jpg"]
    assert skips == [("empty/", SKIP_FOLDER_MARKER)]


def test_list_of_a_whole_bucket_yields_every_key(s3: S3Storage, s3_bucket: str, raw: Any) -> None:
    _put_many(raw, s3_bucket, ["a.jpg", "b/c.jpg"])

    assert [info.relative for info in s3.list(f"s3://{s3_bucket}")] == ["a.jpg", "b/c.jpg"]


def test_list_of_a_single_object_yields_it_under_its_name(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    _put_many(raw, s3_bucket, ["scans/one.jpg"])

    [info] = s3.list(f"s3://{s3_bucket}/scans/one.jpg")

    assert (info.relative, info.uri.key) == ("one.jpg", "scans/one.jpg")


def test_list_of_a_missing_bucket_raises_storage_error_naming_it(s3: S3Storage) -> None:
    with pytest.raises(StorageError, match="no-such-bucket-here.*does not exist") as caught:
        list(s3.list("s3://no-such-bucket-here/scans"))

    assert not isinstance(caught.value, ObjectNotFound | StorageUnavailable)


def test_read_head_is_a_ranged_read(s3: S3Storage, s3_bucket: str) -> None:
    data = bytes(range(256)) * 100
    s3.write(f"s3://{s3_bucket}/p.tif", data)
    s3.write(f"s3://{s3_bucket}/short.tif", b"abc")
    s3.write(f"s3://{s3_bucket}/empty.tif", b"")

    assert s3.read_head(f"s3://{s3_bucket}/p.tif", 32) == data[:32]
    assert s3.read_head(f"s3://{s3_bucket}/short.tif", 32) == b"abc"
    assert s3.read_head(f"s3://{s3_bucket}/empty.tif", 32) == b""
    assert s3.read_head(f"s3://{s3_bucket}/p.tif", 0) == b""


def test_missing_key_raises_object_not_found(s3: S3Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/missing.jpg"

    with pytest.raises(ObjectNotFound, match="missing.jpg"):
        s3.read(uri)
    with pytest.raises(ObjectNotFound):
        s3.read_head(uri, 32)
    with pytest.raises(ObjectNotFound):
        s3.stat(uri)
    assert not s3.exists(uri)


def test_exists_is_true_for_a_written_key(s3: S3Storage, s3_bucket: str) -> None:
    s3.write(f"s3://{s3_bucket}/p.jpg", b"x")

    assert s3.exists(f"s3://{s3_bucket}/p.jpg")


def test_unreachable_endpoint_raises_storage_unavailable(s3_credentials: None) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    storage = S3Storage(
        StorageOptions(
            endpoint_url=closed,
            region="us-east-1",
            addressing_style="path",
            max_attempts=2,
            connect_timeout=1,
            read_timeout=1,
        )
    )

    with pytest.raises(StorageUnavailable, match="unreachable"):
        storage.read("s3://bucket/p.jpg")
    with pytest.raises(StorageUnavailable):
        list(storage.list("s3://bucket/scans"))


def test_client_is_built_once_and_storage_pickles_without_it(s3: S3Storage, s3_bucket: str) -> None:
    s3.write(f"s3://{s3_bucket}/p.jpg", b"x")
    assert s3.client is s3.client

    copy = pickle.loads(pickle.dumps(s3))

    assert copy.options == s3.options
    assert copy.client is not s3.client
    assert copy.read(f"s3://{s3_bucket}/p.jpg") == b"x"
