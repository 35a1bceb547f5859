"""Submitting a known collection again: changed settings, done images made otherwise, touches.

Real files and real catalogs (SQLite and PostgreSQL). Images are finished here as a
worker records them (status, provenance, the SHA-256 of the bytes read); the worker
itself runs in tests/workers/test_workers_redo.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from scheduler_testing import MAGIC, statuses, write_images
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog import Image, ImageStatus, get_collection, make_sessionmaker
from scheduler import CollectionSettings, SettingChange, SubmitSummary, submit
from storage.options import StorageOptions
from storage.registry import open_storage

NAMES = ["a.tif", "b.png", "c.jpg"]
CHECKPOINT = "a" * 64


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Three small files that the scan takes for images."""
    write_images(tmp_path / "scans", NAMES, extra=b"first")
    return tmp_path / "scans"


def _submit(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    *,
    given: frozenset[str] | None = frozenset(),
    redo: bool = False,
    **settings: Any,
) -> SubmitSummary:
    return submit(
        sessions,
        name="c",
        source=source,
        output=output,
        storage=open_storage(source),
        send=None,
        max_in_flight=10,
        settings=CollectionSettings(**settings, given=given),
        redo_changed=redo,
    )


def _finish(sessions: sessionmaker[Session], names: dict[str, dict[str, Any]]) -> None:
    """Record images done as a worker would: provenance and the SHA-256 of their source."""
    with sessions.begin() as db:
        for image in db.scalars(select(Image)):
            if image.relative_path in names:
                data = Path(image.source_uri).read_bytes()
                image.status = ImageStatus.DONE
                image.source_sha256 = hashlib.sha256(data).hexdigest()
                image.output_sha256 = "f" * 64
                for key, value in names[image.relative_path].items():
                    setattr(image, key, value)


def _row(sessions: sessionmaker[Session], relative: str) -> Image:
    with sessions.begin() as db:
        image = db.scalars(select(Image).where(Image.relative_path == relative)).one()
        db.expunge(image)
        return image


def test_done_images_made_otherwise_are_counted_and_redone_only_when_asked(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    first = _submit(
        sessions,
        source,
        output,
        given=None,
        input_size=512,
        upsample="guided",
        checkpoint_sha256=CHECKPOINT,
        model_name="ddcolor_paper",
    )
    made = {"checkpoint_sha256": CHECKPOINT, "model_name": "ddcolor_paper"}
    _finish(
        sessions,
        {
            # No upsampling recorded: made with the collection's of the time.
            "a.tif": {**made, "sizes_tried": [512], "input_size": 512, "upsample": None},
            # Out of memory at 512: asked for 512, made at 256.
            "b.png": {**made, "sizes_tried": [512, 256], "input_size": 256, "upsample": "nearest"},
        },
    )

    upsample = _submit(sessions, source, output, given=frozenset({"upsample"}), upsample="nearest")
    plain = _submit(sessions, source, output)
    bigger = _submit(
        sessions,
        source,
        output,
        given=frozenset({"size", "model"}),
        input_size=256,
        checkpoint_sha256="b" * 64,
        model_name="ddcolor_paper",
    )

    assert first.created and first.reprocessing.different == 0
    assert upsample.setting_changes == (SettingChange("upsample", "guided", "nearest"),)
    assert (upsample.reprocessing.different, upsample.reprocessing.redone) == (1, 0)
    assert upsample.reprocessing.by_setting == {"upsample": 1}
    assert _row(sessions, "a.tif").upsample == "guided"  # what it was made with, kept
    assert plain.setting_changes == ()
    assert plain.reprocessing.by_setting == {"upsample": 1}
    assert [change.name for change in bigger.setting_changes] == [
        "input_size",
        "checkpoint_sha256",
    ]
    assert bigger.reprocessing.by_setting == {"input_size": 2, "model": 2, "upsample": 1}
    assert statuses(sessions) == {"a.tif": "done", "b.png": "done", "c.jpg": "pending"}

    redo = _submit(sessions, source, output, redo=True)

    assert redo.setting_changes == ()
    assert (redo.reprocessing.different, redo.reprocessing.redone) == (2, 2)
    assert set(statuses(sessions).values()) == {"pending"}
    row = _row(sessions, "b.png")
    assert (row.output_sha256, row.finished_at, row.output_uri) == (
        None,
        None,
        str(output / "b.png"),
    )
    with sessions.begin() as db:
        collection = get_collection(db, "c")
        assert (collection.input_size, collection.upsample) == (256, "nearest")
        assert collection.checkpoint_sha256 == "b" * 64
    assert _submit(sessions, source, output).reprocessing.different == 0


def test_a_new_output_format_renames_outputs_not_written_and_counts_done_ones(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    _submit(sessions, source, output)
    _finish(sessions, {"a.tif": {}})

    png = _submit(sessions, source, output, given=frozenset({"output_format"}), output_format="png")

    assert png.setting_changes == (SettingChange("output_format", None, "png"),)
    assert (png.reprocessing.renamed, png.reprocessing.different) == (1, 1)
    assert png.reprocessing.by_setting == {"output_format": 1}
    assert _row(sessions, "c.jpg").output_uri == str(output / "c.jpg.png")
    assert _row(sessions, "b.png").output_uri == str(output / "b.png")
    done = _row(sessions, "a.tif")
    assert (done.status, done.output_uri) == (ImageStatus.DONE, str(output / "a.tif"))

    redo = _submit(sessions, source, output, redo=True)

    assert redo.reprocessing.redone == 1
    redone = _row(sessions, "a.tif")
    assert (redone.status, redone.output_uri) == (ImageStatus.PENDING, str(output / "a.tif.png"))


def test_a_touched_source_stays_done_and_one_with_other_bytes_is_redone(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    _submit(sessions, source, output)
    _finish(sessions, {name: {} for name in NAMES})

    def later(path: Path) -> None:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    later(source / "a.tif")
    touched = _submit(sessions, source, output)

    assert (touched.changed, touched.unchanged) == (0, 3)
    assert touched.reprocessing.same_content == 1
    assert set(statuses(sessions).values()) == {"done"}
    # The new time is recorded: the next submission hashes nothing again.
    assert _submit(sessions, source, output).reprocessing.same_content == 0

    edited = source / "b.png"
    edited.write_bytes(MAGIC["png"] + b"other")  # same size, other bytes
    later(edited)
    (source / "c.jpg").write_bytes(MAGIC["jpg"] + b"longer now")
    changed = _submit(sessions, source, output)

    assert (changed.changed, changed.unchanged, changed.reprocessing.same_content) == (2, 1, 0)
    assert statuses(sessions) == {"a.tif": "done", "b.png": "pending", "c.jpg": "pending"}
    assert _row(sessions, "b.png").source_sha256 is None


@pytest.mark.s3
def test_an_s3_object_uploaded_again_in_parts_stays_done(
    scheduler_sqlite_template: Path,
    tmp_path: Path,
    s3_endpoint_url: str,
    s3_bucket: str,
) -> None:
    path = tmp_path / "catalog.sqlite3"
    shutil.copyfile(scheduler_sqlite_template, path)
    sessions = make_sessionmaker(f"sqlite:///{path}")
    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    part = 5 * 1024 * 1024  # S3's smallest part but the last
    body = MAGIC["jpg"] + bytes(part)
    client.put_object(Bucket=s3_bucket, Key="scans/p.jpg", Body=body)
    source, output = f"s3://{s3_bucket}/scans", f"s3://{s3_bucket}/colour"
    storage = open_storage(source, StorageOptions(endpoint_url=s3_endpoint_url))

    def again() -> SubmitSummary:
        settings = CollectionSettings(given=frozenset())
        return submit(
            sessions,
            name="c",
            source=source,
            output=output,
            storage=storage,
            send=None,
            max_in_flight=1,
            settings=settings,
        )

    again()
    with sessions.begin() as db:
        image = db.scalars(select(Image)).one()
        image.status, image.source_sha256 = ImageStatus.DONE, hashlib.sha256(body).hexdigest()
        etag = image.source_checksum
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="scans/p.jpg")["UploadId"]
    parts = [
        client.upload_part(
            Bucket=s3_bucket, Key="scans/p.jpg", UploadId=upload, PartNumber=number, Body=piece
        )["ETag"]
        for number, piece in ((1, body[:part]), (2, body[part:]))
    ]
    client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="scans/p.jpg",
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(parts, 1)]},
    )

    summary = again()

    assert (summary.changed, summary.reprocessing.same_content) == (0, 1)
    with sessions.begin() as db:
        image = db.scalars(select(Image)).one()
        assert image.status is ImageStatus.DONE and image.source_checksum != etag
    sessions.kw["bind"].dispose()
