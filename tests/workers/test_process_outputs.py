"""process_image() writes only its planned output, and never over a file that is not its own.

Real catalogs (SQLite and PostgreSQL), ``LocalStorage`` on ``tmp_path`` and moto's S3
server; the instant stand-in network. A file at an image's output location is replaced
only if the catalog recorded its SHA-256 for that image: its done output, or the output
an earlier try recorded just before writing it (that try's node may have been killed
between the write and the ``done`` record, as one test does with SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    add_collection,
    attempts_of,
    read_image,
    sha256_of,
    write_gray_png,
)
from workers_helpers import process_locally as _process

from catalog import (
    AttemptOutcome,
    ImageStatus,
    ScannedImage,
    create_or_get_collection,
    queue_pending,
    register_images,
    release_lost,
    transaction,
)
from storage import LocalStorage, StorageOptions
from storage.s3 import S3Storage
from workers.process import ProcessStatus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The reason of an image whose output location holds somebody else's file.
NOT_OURS = "is not a file panchro wrote for this image; left untouched"


@pytest.fixture
def sessions(catalog_sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """A migrated, empty catalog; each test runs once per database."""
    return catalog_sessions


def _temporary_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_an_output_format_that_cannot_hold_the_image_fails_it_as_encode_failed(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    gray = np.tile(np.arange(32, dtype=np.uint8), (24, 1))
    source.mkdir(parents=True, exist_ok=True)
    Image.merge("LA", [Image.fromarray(gray)] * 2).save(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], options={"output_format": "jpg"})

    outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.failure_code) == (ImageStatus.FAILED, "encode.failed")
    assert row.last_error is not None and "JPEG cannot store alpha" in row.last_error
    assert not output.exists() or not any(output.rglob("*"))  # nothing written


def test_a_foreign_file_at_the_planned_output_is_left_byte_identical_and_the_image_fails(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    foreign = write_gray_png(output / "a.png", size=(8, 8))
    before = (foreign.read_bytes(), foreign.stat().st_mtime_ns)

    outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and NOT_OURS in row.last_error
    assert str(foreign) in row.last_error
    assert row.failure_code == "output.conflict"
    assert (foreign.read_bytes(), foreign.stat().st_mtime_ns) == before
    assert _temporary_files(output) == []


def test_a_redone_image_replaces_its_own_earlier_output(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    original = write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    assert _process(sessions, ids["a.png"]).status is ProcessStatus.DONE
    first = sha256_of(output / "a.png")
    write_gray_png(original, size=(30, 20))  # the source changed: registered again
    add_collection(sessions, source, output, ["a.png"])

    outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["a.png"])
    assert row.output_sha256 == sha256_of(output / "a.png") != first


def test_the_file_of_a_try_killed_after_its_write_is_recognised_by_the_next_try(
    sessions: sessionmaker[Session], source: Path, output: Path, tmp_path: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    killed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("killed_after_write.py")),
            url,
            str(ids["a.png"]),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    left = sha256_of(output / "a.png")
    assert read_image(sessions, ids["a.png"]).status is ImageStatus.RUNNING
    collection_id = read_image(sessions, ids["a.png"]).collection_id
    with transaction(sessions) as db:  # what recovery does for a dead node's try
        assert release_lost(db, collection_id=collection_id).requeued == 1
        queue_pending(db, collection_id, 10)

    outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["a.png"])
    assert row.output_sha256 == sha256_of(output / "a.png") != left
    trail = [(a.outcome, a.output_sha256) for a in attempts_of(sessions, row.id)]
    assert trail[0] == (AttemptOutcome.LOST, left)
    assert trail[-1] == (AttemptOutcome.DONE, row.output_sha256)
    assert _temporary_files(output) == []


def test_an_output_that_is_another_collections_original_is_never_written(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    write_gray_png(other / "p.png")
    add_collection(sessions, other, tmp_path / "other-colour", ["p.png"], name="other")
    (other / "p.png").unlink()  # even a missing original keeps its name
    write_gray_png(source / "p.png")
    mine = add_collection(sessions, source, tmp_path, ["p.png"], outputs={"p.png": other / "p.png"})

    outcome = _process(sessions, mine["p.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, mine["p.png"])
    assert row.last_error is not None and "is the original" in row.last_error
    assert not (other / "p.png").exists()


def test_an_output_reached_through_a_link_out_of_the_output_folder_is_refused(
    sessions: sessionmaker[Session], source: Path, output: Path, tmp_path: Path
) -> None:
    write_gray_png(source / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    output.mkdir()
    (output / "sub").symlink_to(elsewhere)
    ids = add_collection(
        sessions, source, output, ["a.png"], outputs={"a.png": output / "sub" / "a.png"}
    )

    outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.last_error is not None and "outside the collection's output" in row.last_error
    assert list(elsewhere.iterdir()) == []


@pytest.mark.s3
def test_a_foreign_s3_object_at_the_planned_key_keeps_its_etag_and_the_image_fails(
    sessions: sessionmaker[Session], source: Path, s3_bucket: str, s3_endpoint_url: str
) -> None:
    write_gray_png(source / "a.png")
    write_gray_png(source / "b.png")
    raw = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    raw.put_object(Bucket=s3_bucket, Key="colour/a.png", Body=b"an original")
    etag = raw.head_object(Bucket=s3_bucket, Key="colour/a.png")["ETag"]
    rows = [
        ScannedImage(str(source / n), n, f"s3://{s3_bucket}/colour/{n}", 1, n, "etag")
        for n in ("a.png", "b.png")
    ]
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(
            db, "scans", str(source), f"s3://{s3_bucket}/colour", input_size=256
        )
        register_images(db, collection.id, rows)
        queue_pending(db, collection.id, 10)
    s3 = S3Storage(StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path"))

    def storage_for(uri: str) -> Any:
        return s3 if uri.startswith("s3://") else LocalStorage()

    failed = _process(sessions, 1, storage_for=storage_for)
    done = _process(sessions, 2, storage_for=storage_for)

    assert (failed.status, done.status) == (ProcessStatus.FAILED, ProcessStatus.DONE)
    assert NOT_OURS in (read_image(sessions, 1).last_error or "")
    assert raw.head_object(Bucket=s3_bucket, Key="colour/a.png")["ETag"] == etag
    assert raw.get_object(Bucket=s3_bucket, Key="colour/a.png")["Body"].read() == b"an original"
    assert read_image(sessions, 2).output_sha256 is not None
    assert sorted(os.listdir(source)) == ["a.png", "b.png"]


def test_a_forced_shared_output_never_replaces_the_other_collections_copy(
    sessions: sessionmaker[Session], tmp_path: Path, output: Path
) -> None:
    first_source, second_source = tmp_path / "box1", tmp_path / "box2"
    write_gray_png(first_source / "p.png")
    write_gray_png(second_source / "p.png", size=(30, 20))
    first = add_collection(sessions, first_source, output, ["p.png"], name="box1")
    second = add_collection(sessions, second_source, output, ["p.png"], name="box2")
    assert _process(sessions, first["p.png"]).status is ProcessStatus.DONE
    copy = sha256_of(output / "p.png")

    outcome = _process(sessions, second["p.png"])

    assert outcome.status is ProcessStatus.FAILED
    assert NOT_OURS in (outcome.reason or "")
    assert sha256_of(output / "p.png") == copy == read_image(sessions, first["p.png"]).output_sha256
