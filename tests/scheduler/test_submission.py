"""Tests of scheduler.submission: scan, register and dispatch, on real catalogs and Redis."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import boto3
import pytest
from scheduler_testing import (
    MAGIC,
    count_rows,
    ids_by_path,
    image_rows,
    queue_length,
    queued_messages,
    statuses,
    write_images,
)
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from catalog import DuplicateOutput, Image, ImageStatus, get_collection
from scheduler import (
    CollectionSettings,
    InvalidDestination,
    OutputCollision,
    SubmitProgress,
    celery_sender,
    submit,
)
from storage.errors import ObjectNotFound
from storage.options import StorageOptions
from storage.registry import open_storage
from storage.uri import parse_uri
from workers.app import create_app

#: Images of the standard test source, relative to it.
NAMES = ["album/p001.tif", "album/p002.tif", "b.png", "c.jpg", "d.bmp"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A local source folder with five images, a hidden file and a text file."""
    root = tmp_path / "scans"
    write_images(root, NAMES)
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "readme.txt").write_text("not an image")
    return root


def _submit(
    sessions: sessionmaker[Session],
    source: Path | str,
    output: Path | str,
    send: Any,
    **kwargs: Any,
) -> Any:
    kwargs.setdefault("max_in_flight", 100)
    return submit(
        sessions,
        name=kwargs.pop("name", "1920s"),
        source=source,
        output=output,
        storage=kwargs.pop("storage", None) or open_storage(source),
        send=send,
        **kwargs,
    )


def test_submit_registers_a_local_folder_and_dispatches_it(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str, source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    summary = _submit(sessions, source, output, celery_sender(celery_app))

    assert summary.created
    assert (summary.new, summary.changed, summary.unchanged) == (5, 0, 0)
    assert summary.skipped == {"hidden": 1, "not-an-image": 1}
    assert (summary.dispatched, summary.pending, summary.in_flight) == (5, 0, 5)
    assert summary.dispatch_error is None
    assert summary.source == str(source) and summary.output == str(output)
    ids = ids_by_path(sessions, "1920s")
    skipped = ids.pop("readme.txt")
    assert sorted(ids) == sorted(NAMES)
    assert sorted(m.image_id for m in queued_messages(redis_url)) == sorted(ids.values())
    with sessions.begin() as db:
        outputs = {image.relative_path: image.output_uri for image in db.scalars(select(Image))}
        text = db.get_one(Image, skipped)
        assert text.status is ImageStatus.SKIPPED and text.source_uri == str(source / "readme.txt")
        assert (
            text.last_error
            == "not an image panchro reads (JPEG, PNG, TIFF, WebP, BMP, JPEG 2000): it is text"
        )
        assert text.failure_code == "skip.not_image"
    assert summary.skipped_total == 1
    assert summary.skipped_files == (("readme.txt", text.last_error),)
    assert summary.ignored == {"hidden": 1}
    assert outputs["album/p001.tif"] == str(output / "album" / "p001.tif")
    assert outputs["d.bmp"] == str(output / "d.bmp.png")


def test_submit_twice_changes_nothing(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str, source: Path, tmp_path: Path
) -> None:
    send = celery_sender(celery_app)
    _submit(sessions, source, tmp_path / "colour", send)
    rows, counts = image_rows(sessions), count_rows(sessions)
    messages = queued_messages(redis_url)

    again = _submit(sessions, source, tmp_path / "colour", send)

    assert not again.created
    assert (again.new, again.changed, again.unchanged) == (0, 0, 5)
    assert (again.dispatched, again.pending) == (0, 0)
    assert count_rows(sessions) == counts == {"collections": 1, "images": 6}
    assert image_rows(sessions) == rows
    assert queued_messages(redis_url) == messages


def test_submit_requeues_a_changed_file_and_only_that_one(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str, source: Path, tmp_path: Path
) -> None:
    send = celery_sender(celery_app)
    _submit(sessions, source, tmp_path / "colour", send)
    with sessions.begin() as db:  # as if the workers had finished everything
        db.execute(update(Image).values(status=ImageStatus.DONE))
    changed = source / "c.jpg"
    changed.write_bytes(MAGIC["jpg"] + b"retouched")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    before = queue_length(redis_url)

    again = _submit(sessions, source, tmp_path / "colour", send)

    assert (again.new, again.changed, again.unchanged) == (0, 1, 4)
    assert again.dispatched == 1
    status = statuses(sessions)
    assert status.pop("c.jpg") == "queued"
    assert status.pop("readme.txt") == "skipped"  # its row was set done by hand above
    assert set(status.values()) == {"done"}
    assert queue_length(redis_url) == before + 1
    assert queued_messages(redis_url)[-1].image_id == ids_by_path(sessions, "1920s")["c.jpg"]


def test_submit_refuses_an_output_inside_the_source_and_creates_nothing(
    sessions: sessionmaker[Session], source: Path
) -> None:
    with pytest.raises(InvalidDestination):
        _submit(sessions, source, source / "colour", None)
    with pytest.raises(InvalidDestination):
        _submit(sessions, source, source, None)
    assert count_rows(sessions) == {"collections": 0, "images": 0}


def test_submit_refuses_a_bad_start_time_before_scanning(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        _submit(
            sessions,
            source,
            tmp_path / "colour",
            None,
            settings=CollectionSettings(not_before="9pm"),
        )
    assert count_rows(sessions) == {"collections": 0, "images": 0}


def test_submit_refuses_a_missing_source_without_creating_a_collection(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with pytest.raises(ObjectNotFound):
        _submit(sessions, tmp_path / "nowhere", tmp_path / "colour", None)
    assert count_rows(sessions) == {"collections": 0, "images": 0}


def test_submit_without_a_sender_only_registers(
    sessions: sessionmaker[Session], redis_url: str, source: Path, tmp_path: Path
) -> None:
    summary = _submit(sessions, source, tmp_path / "colour", None)

    assert (summary.new, summary.dispatched, summary.pending) == (5, 0, 5)
    status = statuses(sessions)
    assert status.pop("readme.txt") == "skipped"
    assert set(status.values()) == {"pending"}
    assert queue_length(redis_url) == 0


def test_submit_keeps_its_registration_when_the_broker_is_unreachable(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(
        broker_url=f"redis://127.0.0.1:{port}/0",
        task_publish_retry=False,
        broker_transport_options={"max_retries": 0},
    )

    summary = _submit(sessions, source, tmp_path / "colour", celery_sender(app))

    assert summary.dispatch_error is not None
    assert "went back to pending" in summary.dispatch_error
    assert (summary.new, summary.dispatched, summary.pending) == (5, 0, 5)
    status = statuses(sessions)
    assert status.pop("readme.txt") == "skipped"
    assert set(status.values()) == {"pending"}


def test_submit_holds_a_collection_whose_window_has_not_opened(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str, source: Path, tmp_path: Path
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    summary = _submit(
        sessions,
        source,
        tmp_path / "colour",
        celery_sender(celery_app),
        settings=CollectionSettings(not_before="00:00", priority=3),
        now=yesterday,
        tz=UTC,
    )

    assert summary.held
    assert summary.opens_at is not None and summary.opens_at > yesterday
    assert (summary.dispatched, summary.pending) == (0, 5)
    assert queue_length(redis_url) == 0
    with sessions.begin() as db:
        collection = get_collection(db, "1920s")
        assert (collection.not_before, collection.priority) == ("00:00", 3)


def test_submit_registers_in_chunks_and_dispatches_while_it_scans(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str, source: Path, tmp_path: Path
) -> None:
    seen: list[SubmitProgress] = []
    summary = _submit(
        sessions,
        source,
        tmp_path / "colour",
        celery_sender(celery_app),
        chunk_rows=2,
        on_progress=seen.append,
    )

    assert (summary.new, summary.dispatched) == (5, 5)
    registered = [progress.registered for progress in seen if progress.registered]
    assert sorted(set(registered)) == [2, 4, 5]
    # The first chunk's images were sent before the scan had finished.
    first_sent = next(progress for progress in seen if progress.dispatched)
    assert first_sent.dispatched == 2 and not first_sent.scan_finished
    assert seen[-1].scan_finished and seen[-1].dispatched == 5
    assert (seen[-1].scanned, seen[-1].skipped) == (5, 2)
    assert queue_length(redis_url) == 5


def test_submit_stores_a_requested_output_format_and_names_outputs_for_it(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    _submit(sessions, source, output, None, settings=CollectionSettings(output_format="png"))

    with sessions.begin() as db:
        outputs = {image.relative_path: image.output_uri for image in db.scalars(select(Image))}
        options = get_collection(db, "1920s").options
    assert options == {"output_format": "png"}
    assert outputs["album/p001.tif"] == str(output / "album" / "p001.tif.png")
    assert outputs["b.png"] == str(output / "b.png")


def test_submit_refuses_names_that_collide_on_a_case_insensitive_destination(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    root = tmp_path / "scans"
    write_images(root, ["X.png", "x.png"])
    with pytest.raises(OutputCollision, match="X.png and x.png"):
        _submit(sessions, root, tmp_path / "colour", None, case_insensitive=True)


def test_submit_refuses_a_source_named_like_another_sources_converted_output(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    root = tmp_path / "scans"
    write_images(root, ["a.bmp", "a.bmp.png"])
    with pytest.raises(DuplicateOutput):
        _submit(sessions, root, tmp_path / "colour", None)


@pytest.mark.s3
def test_submit_of_an_s3_source_registers_and_dispatches_every_object(
    sessions: sessionmaker[Session],
    celery_app: Any,
    redis_url: str,
    s3_endpoint_url: str,
    s3_bucket: str,
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    keys = ["scans/box 1/p1.tif", "scans/box 1/p2.jpeg", "scans/p3.png", "scans/notes.txt"]
    for key in keys:
        body = b"plain text" if key.endswith(".txt") else MAGIC["jpg"] + key.encode()
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    source = f"s3://{s3_bucket}/scans"
    storage = open_storage(source, StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1"))

    summary = _submit(
        sessions,
        source,
        f"s3://{s3_bucket}/colour",
        celery_sender(celery_app),
        storage=storage,
    )

    assert (summary.new, summary.dispatched) == (3, 3)
    assert summary.skipped == {"not-an-image": 1}
    with sessions.begin() as db:
        outputs = {image.source_uri: image.output_uri for image in db.scalars(select(Image))}
    assert outputs == {
        f"s3://{s3_bucket}/scans/box 1/p1.tif": f"s3://{s3_bucket}/colour/box 1/p1.tif",
        f"s3://{s3_bucket}/scans/box 1/p2.jpeg": f"s3://{s3_bucket}/colour/box 1/p2.jpeg",
        f"s3://{s3_bucket}/scans/p3.png": f"s3://{s3_bucket}/colour/p3.png",
        # Recorded as skipped, with the place it would have been written to.
        f"s3://{s3_bucket}/scans/notes.txt": f"s3://{s3_bucket}/colour/notes.txt",
    }
    assert summary.skipped_files == (("notes.txt", ANY),)
    assert Counter(m.task for m in queued_messages(redis_url)) == {"panchro.colorize": 3}

    again = _submit(
        sessions, source, f"s3://{s3_bucket}/colour", celery_sender(celery_app), storage=storage
    )
    assert (again.new, again.changed, again.unchanged, again.dispatched) == (0, 0, 3, 0)


@pytest.mark.s3
def test_submit_refuses_an_s3_output_inside_the_s3_source(
    sessions: sessionmaker[Session], s3_endpoint_url: str, s3_bucket: str
) -> None:
    source = f"s3://{s3_bucket}/scans"
    storage = open_storage(source, StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1"))
    with pytest.raises(InvalidDestination):
        _submit(sessions, source, f"s3://{s3_bucket}/scans/colour", None, storage=storage)
    assert count_rows(sessions) == {"collections": 0, "images": 0}


def test_submit_records_skipped_files_and_non_utf8_names_and_is_idempotent(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    odd = os.path.join(os.fsencode(source), b"caf\xe9.png")
    with open(odd, "wb") as file:
        file.write(MAGIC["png"])
    (source / "empty.jpg").write_bytes(b"")
    output = tmp_path / "colour"
    caplog.set_level(logging.INFO, logger="scheduler.submission")
    first = _submit(sessions, source, output, None)
    rows = image_rows(sessions)
    skips = [r for r in caplog.records if r.__dict__.get("status") == "skipped"]
    assert sorted(r.getMessage().split(": ")[0].split()[-1] for r in skips) == [
        "empty.jpg",
        "readme.txt",
    ]

    again = _submit(sessions, source, output, None)

    assert (first.new, again.new, again.changed) == (6, 0, 0)
    assert image_rows(sessions) == rows
    status = statuses(sessions)
    assert (status.pop("empty.jpg"), status.pop("readme.txt")) == ("skipped", "skipped")
    assert status.pop("caf\\xe9.png") == "pending"  # stored as valid text
    assert set(status.values()) == {"pending"}
    with sessions.begin() as db:
        image = db.scalars(select(Image).where(Image.relative_path == "caf\\xe9.png")).one()
        # The URIs give back the exact bytes of the names.
        assert os.fsencode(parse_uri(image.source_uri).key) == odd
        assert os.fsencode(parse_uri(image.output_uri).key).endswith(b"/colour/caf\xe9.png")
    assert again.skipped_files == (
        ("empty.jpg", "empty file (0 bytes)"),
        ("readme.txt", ANY),
    )

    write_images(source, ["empty.jpg"])  # fixed: now an image
    fixed = _submit(sessions, source, output, None)

    assert (fixed.new, fixed.changed, fixed.skipped_total) == (0, 1, 1)
    assert statuses(sessions)["empty.jpg"] == "pending"
