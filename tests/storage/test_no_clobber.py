"""Writes that never replace what is not the caller's: local folders and S3 (moto over HTTP).

``write(..., overwrite=False, replaceable=digests)`` creates an object only where none is,
and replaces an existing one only if the SHA-256 of its content is one of ``digests`` and
it did not change between that check and the replacement. Also: ``contains``/``overlaps``,
the comparison of locations that the output checks use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from storage.errors import OutputExists
from storage.local import LocalStorage
from storage.options import StorageOptions
from storage.s3 import S3Storage
from storage.uri import contains, overlaps, parse_uri


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


# --------------------------------------------------------------------------- locations


def test_s3_prefixes_overlap_on_whole_key_segments_only() -> None:
    scans, scans2 = parse_uri("s3://bkt/scans"), parse_uri("s3://bkt/scans2")

    assert not overlaps(scans, scans2)
    assert contains(scans, parse_uri("s3://bkt/scans/box1"))
    assert contains(parse_uri("s3://bkt"), scans)
    assert not contains(scans, parse_uri("s3://other/scans/box1"))
    assert not overlaps(scans, parse_uri("/scans"))


def test_local_folders_are_compared_after_resolving_links(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    (scans / "box1").mkdir(parents=True)
    link = tmp_path / "colour"
    link.symlink_to(scans / "box1")

    assert contains(parse_uri(scans), parse_uri(link / "new"))
    assert overlaps(parse_uri(link), parse_uri(scans))
    assert not overlaps(parse_uri(scans), parse_uri(tmp_path / "scans-out"))


# --------------------------------------------------------------------------- local


def test_local_no_clobber_leaves_a_foreign_file_byte_identical(tmp_path: Path) -> None:
    target = tmp_path / "p000.png"
    target.write_bytes(b"an original")
    before = target.stat()

    with pytest.raises(OutputExists) as raised:
        LocalStorage().write(
            str(target), b"colorized", overwrite=False, replaceable={_sha(b"earlier copy")}
        )

    assert raised.value.sha256 == _sha(b"an original")
    assert target.read_bytes() == b"an original"
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    assert _leftovers(tmp_path) == []


def test_local_no_clobber_replaces_a_file_whose_digest_is_replaceable(tmp_path: Path) -> None:
    target = tmp_path / "p000.png"
    target.write_bytes(b"earlier copy")

    LocalStorage().write(
        str(target), b"new copy", overwrite=False, replaceable={_sha(b"earlier copy")}
    )

    assert target.read_bytes() == b"new copy"
    assert _leftovers(tmp_path) == []


def test_local_no_clobber_creates_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "p000.png"

    LocalStorage().write(str(target), b"new copy", overwrite=False, replaceable={_sha(b"x")})

    assert target.read_bytes() == b"new copy"
    assert _leftovers(target.parent) == []


def test_local_no_clobber_never_replaces_a_link_even_to_replaceable_content(
    tmp_path: Path,
) -> None:
    original = tmp_path / "scans" / "p000.png"
    original.parent.mkdir()
    original.write_bytes(b"earlier copy")
    target = tmp_path / "colour" / "p000.png"
    target.parent.mkdir()
    target.symlink_to(original)

    with pytest.raises(OutputExists, match="not a regular file"):
        LocalStorage().write(
            str(target), b"new copy", overwrite=False, replaceable={_sha(b"earlier copy")}
        )

    assert target.is_symlink()
    assert original.read_bytes() == b"earlier copy"
    assert _leftovers(target.parent) == []


# --------------------------------------------------------------------------- S3


@pytest.fixture
def s3(s3_endpoint_url: str, s3_credentials: None) -> S3Storage:
    return S3Storage(
        StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1", addressing_style="path")
    )


@pytest.fixture
def raw(s3_endpoint_url: str, s3_credentials: None) -> Any:
    """A plain boto3 client, to arrange and inspect the bucket independently of S3Storage."""
    return boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")


@pytest.mark.s3
def test_s3_no_clobber_leaves_a_foreign_object_and_its_etag(
    s3: S3Storage, raw: Any, s3_bucket: str
) -> None:
    raw.put_object(Bucket=s3_bucket, Key="colour/p000.png", Body=b"an original")
    etag = raw.head_object(Bucket=s3_bucket, Key="colour/p000.png")["ETag"]

    with pytest.raises(OutputExists) as raised:
        s3.write(
            f"s3://{s3_bucket}/colour/p000.png",
            b"colorized",
            overwrite=False,
            replaceable={_sha(b"earlier copy")},
        )

    assert raised.value.sha256 == _sha(b"an original")
    head = raw.head_object(Bucket=s3_bucket, Key="colour/p000.png")
    assert head["ETag"] == etag
    assert raw.get_object(Bucket=s3_bucket, Key="colour/p000.png")["Body"].read() == (
        b"an original"
    )


@pytest.mark.s3
def test_s3_no_clobber_replaces_a_replaceable_object_and_creates_a_missing_one(
    s3: S3Storage, raw: Any, s3_bucket: str
) -> None:
    raw.put_object(Bucket=s3_bucket, Key="colour/a.png", Body=b"earlier copy")
    ours = {_sha(b"earlier copy")}

    s3.write(f"s3://{s3_bucket}/colour/a.png", b"new a", overwrite=False, replaceable=ours)
    s3.write(f"s3://{s3_bucket}/colour/b.png", b"new b", overwrite=False, replaceable=ours)

    assert s3.read(f"s3://{s3_bucket}/colour/a.png") == b"new a"
    assert s3.read(f"s3://{s3_bucket}/colour/b.png") == b"new b"


class _ChangedAfterCheck(S3Storage):
    """Another writer replaces the object between the content check and the write."""

    def __init__(self, options: StorageOptions, raw: Any) -> None:
        super().__init__(options)
        self.raw = raw

    def _write_condition(self, location: Any, replaceable: frozenset[str]) -> dict[str, str]:
        condition = super()._write_condition(location, replaceable)
        self.raw.put_object(Bucket=location.bucket, Key=location.key, Body=b"someone else's")
        return condition


@pytest.mark.s3
def test_s3_replacement_is_conditional_on_the_etag_that_was_checked(
    s3: S3Storage, raw: Any, s3_bucket: str
) -> None:
    raw.put_object(Bucket=s3_bucket, Key="colour/a.png", Body=b"earlier copy")
    racing = _ChangedAfterCheck(s3.options, raw)

    with pytest.raises(OutputExists):
        racing.write(
            f"s3://{s3_bucket}/colour/a.png",
            b"new a",
            overwrite=False,
            replaceable={_sha(b"earlier copy")},
        )

    body = raw.get_object(Bucket=s3_bucket, Key="colour/a.png")["Body"].read()
    assert body == b"someone else's"


class _CreatedAfterCheck(S3Storage):
    """Another writer creates the object between the HEAD that found nothing and the PUT."""

    def __init__(self, options: StorageOptions, raw: Any) -> None:
        super().__init__(options)
        self.raw = raw

    def _write_condition(self, location: Any, replaceable: frozenset[str]) -> dict[str, str]:
        condition = super()._write_condition(location, replaceable)
        if condition == {"IfNoneMatch": "*"}:
            self.raw.put_object(Bucket=location.bucket, Key=location.key, Body=b"theirs")
        return condition


@pytest.mark.s3
def test_s3_creation_is_conditional_on_no_object_being_there(
    s3: S3Storage, raw: Any, s3_bucket: str
) -> None:
    racing = _CreatedAfterCheck(s3.options, raw)

    with pytest.raises(OutputExists):
        racing.write(f"s3://{s3_bucket}/colour/new.png", b"mine", overwrite=False)

    assert raw.get_object(Bucket=s3_bucket, Key="colour/new.png")["Body"].read() == b"theirs"


@pytest.mark.s3
def test_s3_precondition_failing_on_our_own_earlier_write_is_looked_at_again(
    s3: S3Storage, raw: Any, s3_bucket: str
) -> None:
    # As when S3 kept a PUT whose answer was lost and the retried PUT finds the object.
    class _OwnWriteLanded(S3Storage):
        def _write_condition(self, location: Any, replaceable: frozenset[str]) -> dict[str, str]:
            condition = super()._write_condition(location, replaceable)
            if condition == {"IfNoneMatch": "*"}:
                raw.put_object(Bucket=location.bucket, Key=location.key, Body=b"mine")
            return condition

    _OwnWriteLanded(s3.options).write(
        f"s3://{s3_bucket}/colour/a.png", b"mine", overwrite=False, replaceable={_sha(b"mine")}
    )

    assert s3.read(f"s3://{s3_bucket}/colour/a.png") == b"mine"
