"""Tests of storage.scan on real files and on a real S3 API (moto's server over HTTP)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from storage.base import (
    Data,
    ObjectInfo,
    Prune,
    SkipListener,
)
from storage.errors import ObjectNotFound
from storage.local import LocalStorage
from storage.options import StorageOptions
from storage.s3 import S3Storage
from storage.scan import scan
from storage.scan_report import (
    ScanReport,
)
from storage.skips import (
    SKIP_EMPTY,
    SKIP_FOLDER_MARKER,
    SKIP_HIDDEN,
    SKIP_LINK_OUTSIDE,
    SKIP_MESSAGES,
    SKIP_NOT_AN_IMAGE,
    SKIP_SYMLINK_LOOP,
    SKIP_SYSTEM,
    SKIP_UNKNOWN_EXTENSION,
    SKIP_UNSAFE_NAME,
)
from storage.uri import URI, parse_uri


def _image(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format=kind)
    return buffer.getvalue()


JPEG, PNG, TIFF, WEBP, BMP = (_image(kind) for kind in ("JPEG", "PNG", "TIFF", "WEBP", "BMP"))
TEXT = b"Not an image, whatever the name says.\n"


def _files(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class _CountingStorage:
    """A real LocalStorage that counts the heads it is asked to read."""

    def __init__(self) -> None:
        self.inner = LocalStorage()
        self.heads_read = 0

    def list(
        self,
        prefix: URI | str,
        *,
        on_skip: SkipListener | None = None,
        prune: Prune | None = None,
    ) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, on_skip=on_skip, prune=prune)

    def read(self, uri: URI | str) -> bytes:
        return self.inner.read(uri)

    def read_head(self, uri: URI | str, n: int) -> bytes:
        self.heads_read += 1
        return self.inner.read_head(uri, n)

    def write(
        self,
        uri: URI | str,
        data: Data,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
    ) -> None:
        self.inner.write(uri, data, content_type=content_type, overwrite=overwrite)

    def exists(self, uri: URI | str) -> bool:
        return self.inner.exists(uri)

    def stat(self, uri: URI | str) -> ObjectInfo:
        return self.inner.stat(uri)


# --------------------------------------------------------------------------- local folders


def test_scan_keeps_images_by_content_whatever_their_names(tmp_path: Path) -> None:
    _files(
        tmp_path,
        {
            "album/p001.jpg": JPEG,
            "album/p002": PNG,
            "album/p003.dat": TIFF,
            "album/p004.webp": WEBP,
            "album/p005.BMP": BMP,
            "album/notes.jpg": TEXT,
            "album/readme.txt": TEXT,
            "album/zero.tif": b"",
        },
    )
    report = ScanReport()

    found = list(scan(LocalStorage(), str(tmp_path), report=report))

    assert [(item.relative, item.format, item.sniffed) for item in found] == [
        ("album/p001.jpg", "JPEG", True),
        ("album/p002", "PNG", True),
        ("album/p003.dat", "TIFF", True),
        ("album/p004.webp", "WEBP", True),
        ("album/p005.BMP", "BMP", True),
    ]
    assert report.skipped == {SKIP_NOT_AN_IMAGE: 2, SKIP_EMPTY: 1}
    assert sorted(report.examples[SKIP_NOT_AN_IMAGE]) == ["album/notes.jpg", "album/readme.txt"]
    assert (report.found, report.found_bytes) == (5, len(JPEG + PNG + TIFF + WEBP + BMP))


def test_scan_records_size_and_local_checksum(tmp_path: Path) -> None:
    _files(tmp_path, {"p.jpg": JPEG})
    path = tmp_path / "p.jpg"

    [item] = scan(LocalStorage(), str(tmp_path))

    assert item.uri == URI("file", "", str(path))
    assert item.size == len(JPEG)
    assert (item.checksum, item.checksum_kind) == (
        f"{path.stat().st_mtime_ns}+{len(JPEG)}",
        "mtime-size",
    )


def test_scan_skips_hidden_and_system_files_and_folders(tmp_path: Path) -> None:
    _files(
        tmp_path,
        {
            "keep/p.jpg": JPEG,
            ".DS_Store": TEXT,
            "keep/._p.jpg": JPEG,
            "keep/Thumbs.db": TEXT,
            "keep/desktop.ini": TEXT,
            ".git/objects/ab": JPEG,
            ".hidden-album/p.jpg": JPEG,
            "@eaDir/p.jpg/SYNOFILE_THUMB_XL.jpg": JPEG,
            "__MACOSX/keep/._p.jpg": JPEG,
        },
    )
    report = ScanReport()

    found = [item.relative for item in scan(LocalStorage(), str(tmp_path), report=report)]

    assert found == ["keep/p.jpg"]
    assert report.skipped == {SKIP_HIDDEN: 4, SKIP_SYSTEM: 4}
    assert ".git/" in report.examples[SKIP_HIDDEN]
    assert "@eaDir/" in report.examples[SKIP_SYSTEM]


def test_scan_with_a_symlink_loop_finishes_and_reports_it(tmp_path: Path) -> None:
    _files(tmp_path, {"a/p.jpg": JPEG})
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    seen: list[tuple[str, str]] = []
    report = ScanReport(on_skip=lambda rel, why: seen.append((rel, why)))

    found = [item.relative for item in scan(LocalStorage(), str(tmp_path), report=report)]

    assert found == ["a/p.jpg"]
    assert report.skipped == {SKIP_SYMLINK_LOOP: 1}
    assert seen == [("a/loop/", SKIP_SYMLINK_LOOP)]


def test_scan_finds_file_names_that_are_not_utf8_with_a_uri_that_reads_them_back(
    tmp_path: Path,
) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as file:
        file.write(JPEG)
    _files(tmp_path, {"café.jpg": JPEG})
    report = ScanReport()

    found = list(scan(LocalStorage(), str(tmp_path), report=report))

    assert [item.relative for item in found] == ["café.jpg", "caf\udce9.jpg"]
    assert report.skipped == {}
    text = str(found[1].uri)
    assert text.startswith("file://") and text.endswith("/caf%E9.jpg")
    text.encode("utf-8")  # storable anywhere
    assert LocalStorage().read(text) == JPEG
    assert os.fsencode(parse_uri(text).key) == raw


def test_scan_by_extension_trusts_known_extensions_and_sniffs_the_rest(tmp_path: Path) -> None:
    _files(tmp_path, {"a.jpg": TEXT, "b.TIFF": TIFF, "c": PNG, "d.txt": TEXT})
    storage = _CountingStorage()
    report = ScanReport()

    found = list(scan(storage, str(tmp_path), by_extension=True, report=report))

    assert [(item.relative, item.format, item.sniffed) for item in found] == [
        ("a.jpg", "JPEG", False),
        ("b.TIFF", "TIFF", False),
        ("c", "PNG", True),
    ]
    assert storage.heads_read == 2
    assert report.skipped == {SKIP_NOT_AN_IMAGE: 1}


def test_scan_without_sniffing_reads_nothing_and_keeps_image_extensions(tmp_path: Path) -> None:
    _files(tmp_path, {"a.jpg": TEXT, "b.jp2": TEXT, "c": PNG, "d.txt": TEXT})
    storage = _CountingStorage()
    report = ScanReport()

    found = list(scan(storage, str(tmp_path), sniff=False, report=report))

    assert [(item.relative, item.format) for item in found] == [
        ("a.jpg", "JPEG"),
        ("b.jp2", "JPEG2000"),
    ]
    assert storage.heads_read == 0
    assert report.skipped == {SKIP_UNKNOWN_EXTENSION: 2}


def test_scan_of_a_missing_folder_raises_object_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        scan(LocalStorage(), str(tmp_path / "missing"))


def test_scan_sniffs_with_the_sniffer_it_is_given(tmp_path: Path) -> None:
    _files(tmp_path, {"a.raw": b"RAW!" + bytes(40), "b.jpg": JPEG})

    def raw_only(head: bytes) -> str | None:
        return "raw" if head.startswith(b"RAW!") else None

    found = [(i.relative, i.format) for i in scan(LocalStorage(), tmp_path, sniffer=raw_only)]

    assert found == [("a.raw", "raw")]


# --------------------------------------------------------------------------- S3


@pytest.fixture
def s3(s3_endpoint_url: str, s3_credentials: None) -> S3Storage:
    return S3Storage(
        StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1", addressing_style="path")
    )


@pytest.fixture
def raw(s3_endpoint_url: str, s3_credentials: None) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")


def _put(raw: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        raw.put_object(Bucket=bucket, Key=key, Body=data)


@pytest.mark.s3
def test_s3_scan_trusts_extensions_by_default_and_sniffs_the_rest(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    _put(
        raw,
        s3_bucket,
        {
            "scans/a.jpg": TEXT,
            "scans/b": PNG,
            "scans/c": TEXT,
            "scans/.DS_Store": TEXT,
            "scans/__MACOSX/._b": PNG,
            "scans/empty/": b"",
            "scans/a//d.jpg": JPEG,
            "scans/zero.png": b"",
            "other/e.jpg": JPEG,
        },
    )
    report = ScanReport()

    found = list(scan(s3, f"s3://{s3_bucket}/scans", report=report))

    assert [(item.relative, item.format, item.sniffed) for item in found] == [
        ("a.jpg", "JPEG", False),
        ("b", "PNG", True),
    ]
    assert found[1].checksum_kind == "etag"
    assert found[1].size == len(PNG)
    assert report.skipped == {
        SKIP_NOT_AN_IMAGE: 1,
        SKIP_HIDDEN: 1,
        SKIP_SYSTEM: 1,
        SKIP_FOLDER_MARKER: 1,
        SKIP_UNSAFE_NAME: 1,
        SKIP_EMPTY: 1,
    }


@pytest.mark.s3
def test_s3_scan_by_content_keeps_listing_order_across_threads(
    s3: S3Storage, s3_bucket: str, raw: Any
) -> None:
    objects = {f"scans/p{index:03d}": (PNG if index % 3 else TEXT) for index in range(120)}
    objects["scans/p050.jpg"] = TEXT
    _put(raw, s3_bucket, objects)
    report = ScanReport()

    found = list(scan(s3, f"s3://{s3_bucket}/scans", by_extension=False, workers=8, report=report))

    expected = sorted(key[len("scans/") :] for key, data in objects.items() if data == PNG)
    assert [item.relative for item in found] == expected
    assert all(item.sniffed for item in found)
    assert report.skipped == {SKIP_NOT_AN_IMAGE: len(objects) - len(expected)}


def test_scan_does_not_follow_links_out_of_its_folder_and_records_them(tmp_path: Path) -> None:
    root, outside = tmp_path / "scans", tmp_path / "elsewhere"
    _files(root, {"a.jpg": JPEG, "sub/b.png": PNG})
    _files(outside, {"theirs.jpg": JPEG, "folder/deep.jpg": JPEG})
    (root / "out.jpg").symlink_to(outside / "theirs.jpg")
    (root / "out-folder").symlink_to(outside / "folder")
    (root / "in.jpg").symlink_to(root / "a.jpg")
    (root / "in-folder").symlink_to(root / "sub")
    report = ScanReport()

    found = [item.relative for item in scan(LocalStorage(), str(root), report=report)]

    # Links inside are followed; a folder reached twice is listed once, under its first path.
    assert found == ["a.jpg", "in-folder/b.png", "in.jpg"]
    assert report.skipped == {SKIP_LINK_OUTSIDE: 2, "already-listed": 1}
    recorded = {entry.relative: entry for entry in report.take_recorded()}
    assert sorted(recorded) == ["out-folder", "out.jpg"]
    assert "outside the source folder" in recorded["out.jpg"].message
    assert str(outside / "theirs.jpg") in recorded["out.jpg"].message
    assert report.take_recorded() == []


def test_scan_keeps_what_it_skips_for_the_catalog_except_hidden_and_system_files(
    tmp_path: Path,
) -> None:
    _files(
        tmp_path,
        {
            "a.jpg": JPEG,
            "empty.jpg": b"",
            "doc.jpg": b"%PDF-1.7\n",
            "notes.png": TEXT,
            ".DS_Store": b"x",
            "Thumbs.db": b"x",
        },
    )
    report = ScanReport()

    list(scan(LocalStorage(), str(tmp_path), report=report))

    messages = {entry.relative: entry.message for entry in report.take_recorded()}
    assert messages == {
        "doc.jpg": f"{SKIP_MESSAGES[SKIP_NOT_AN_IMAGE]}: it is a PDF document",
        "empty.jpg": "empty file (0 bytes)",
        "notes.png": f"{SKIP_MESSAGES[SKIP_NOT_AN_IMAGE]}: it is text",
    }
    assert report.total_ignored == 2
