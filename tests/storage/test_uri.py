"""Tests of storage.uri: parsing, joining and relative keys of S3 and local locations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.errors import InvalidURI
from storage.uri import URI, join, parse_uri


def test_parse_uri_splits_s3_bucket_and_key() -> None:
    uri = parse_uri("s3://scans-1920s/family/album 3/p001.tif")

    assert uri == URI("s3", "scans-1920s", "family/album 3/p001.tif")
    assert uri.is_s3 and not uri.is_local
    assert uri.name == "p001.tif"
    assert str(uri) == "s3://scans-1920s/family/album 3/p001.tif"


def test_parse_uri_treats_trailing_slash_and_bucket_root_alike() -> None:
    assert parse_uri("s3://bucket/scans/") == parse_uri("s3://bucket/scans")
    assert parse_uri("s3://bucket/") == parse_uri("s3://bucket") == URI("s3", "bucket", "")
    assert str(parse_uri("s3://bucket/")) == "s3://bucket"


def test_parse_uri_keeps_s3_keys_verbatim() -> None:
    uri = parse_uri("s3://bucket/a%20b/c+d?.jpg")

    assert uri.key == "a%20b/c+d?.jpg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://", "without a bucket"),
        ("s3:///key", "without a bucket"),
        ("s3://ab/key", "3 to 63"),
        ("s3://" + "a" * 64, "3 to 63"),
        ("s3://Upper-Case/key", "lower-case"),
        ("s3://under_score/key", "lower-case"),
        ("s3://-leading/key", "start and end"),
        ("s3://my..bucket/key", "'..'"),
        ("s3://192.168.1.10/key", "IP address"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/./b", "'.'"),
        ("gs://bucket/key", "unsupported scheme"),
        ("", "empty"),
        ("   ", "empty"),
        ("file://server/share/x.tif", "host"),
    ],
)
def test_parse_uri_refuses_bad_locations_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidURI, match=message):
        parse_uri(text)


def test_parse_uri_makes_relative_local_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    uri = parse_uri("scans/../scans/1920s/")

    assert uri == URI("file", "", str(tmp_path / "scans" / "1920s"))
    assert uri.is_local
    assert uri.path == tmp_path / "scans" / "1920s"
    assert str(uri) == str(tmp_path / "scans" / "1920s")


def test_parse_uri_accepts_file_scheme_and_percent_decodes_it(tmp_path: Path) -> None:
    plain = parse_uri(tmp_path / "album 3")

    assert parse_uri(f"file://{tmp_path}/album%203") == plain
    assert parse_uri(f"file://localhost{tmp_path}/album%203") == plain


def test_parse_uri_returns_a_uri_unchanged() -> None:
    uri = URI("s3", "bucket", "key")

    assert parse_uri(uri) is uri


def test_path_of_an_s3_uri_is_refused() -> None:
    with pytest.raises(InvalidURI):
        _ = parse_uri("s3://bucket/key").path


def test_relative_to_returns_the_key_below_the_prefix() -> None:
    prefix = parse_uri("s3://bucket/scans")

    assert parse_uri("s3://bucket/scans/a/b.jpg").relative_to(prefix) == "a/b.jpg"
    assert parse_uri("s3://bucket/a/b.jpg").relative_to(parse_uri("s3://bucket")) == "a/b.jpg"


def test_relative_to_works_on_local_paths_including_the_root() -> None:
    assert parse_uri("/data/scans/x.tif").relative_to(parse_uri("/data")) == "scans/x.tif"
    assert parse_uri("/data/x.tif").relative_to(parse_uri("/")) == "data/x.tif"


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("s3://bucket/scans2/x.jpg", "s3://bucket/scans"),
        ("s3://bucket/scans", "s3://bucket/scans"),
        ("s3://other/scans/x.jpg", "s3://bucket/scans"),
        ("/data/scans/x.jpg", "s3://bucket/data"),
        ("/data/scans-old/x.jpg", "/data/scans"),
    ],
)
def test_relative_to_refuses_locations_outside_the_prefix(uri: str, prefix: str) -> None:
    with pytest.raises(InvalidURI, match="not inside"):
        parse_uri(uri).relative_to(parse_uri(prefix))


def test_relative_to_refuses_keys_with_empty_segments() -> None:
    with pytest.raises(InvalidURI, match="segment"):
        URI("s3", "bucket", "scans/a//x.jpg").relative_to(parse_uri("s3://bucket/scans"))


def test_join_appends_a_relative_key() -> None:
    assert join(parse_uri("s3://out/colour"), "a/b.jpg") == URI("s3", "out", "colour/a/b.jpg")
    assert join(parse_uri("s3://out"), "a/b.jpg") == URI("s3", "out", "a/b.jpg")
    assert parse_uri("/out").join("a/b.jpg") == URI("file", "", "/out/a/b.jpg")
    assert parse_uri("/").join("b.jpg") == URI("file", "", "/b.jpg")


def test_join_and_relative_to_round_trip() -> None:
    source, output = parse_uri("s3://inbox/scans"), parse_uri("/srv/colour")
    original = parse_uri("s3://inbox/scans/1920s/Ünïcode name.tif")

    mirrored = join(output, original.relative_to(source))

    assert mirrored.key == os.path.join("/srv/colour", "1920s", "Ünïcode name.tif")


@pytest.mark.parametrize(
    "relative", ["../escape.jpg", "a/../../b.jpg", "a/./b.jpg", "/abs.jpg", "a//b.jpg", "", "a/"]
)
def test_join_refuses_unsafe_relative_keys(relative: str) -> None:
    with pytest.raises(InvalidURI):
        join(parse_uri("/srv/colour"), relative)
