"""No output location shares files with a source or another collection's output (``--force`` aside).

``check_output_root`` alone, then through ``submit()`` on SQLite and PostgreSQL: a refused
submission registers nothing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image as PILImage
from scheduler_testing import count_rows, write_images
from sqlalchemy.orm import Session, sessionmaker

from catalog import CollectionRoots
from scheduler import OverlappingOutput, check_output_root, submit
from storage.options import StorageOptions
from storage.registry import open_storage

#: A catalog holding one collection that reads s3://arc/scans and writes s3://arc/colour.
KNOWN = [CollectionRoots(1, "1920s", "s3://arc/scans", "s3://arc/colour")]


@pytest.mark.parametrize(
    ("source", "output", "words"),
    [
        ("s3://arc/scans/box1", "s3://arc/scans", "contains the source s3://arc/scans/box1"),
        ("s3://new/in", "s3://arc/scans/box1-colour", "lies inside the source s3://arc/scans"),
        ("s3://new/in", "s3://arc", "contains the source s3://arc/scans"),
        ("s3://new/in", "s3://arc/colour", "is the output s3://arc/colour"),
        ("s3://new/in", "s3://arc/colour/new", "lies inside the output s3://arc/colour"),
        ("s3://arc/colour/1920s", "s3://new/out", "the source s3://arc/colour/1920s lies"),
    ],
)
def test_overlapping_locations_are_refused_with_what_they_overlap(
    source: str, output: str, words: str
) -> None:
    with pytest.raises(OverlappingOutput, match="--force") as raised:
        check_output_root(source, output, KNOWN, name="new")

    assert words in str(raised.value)
    check_output_root(source, output, KNOWN, name="new", force=True)


def test_prefixes_that_only_share_a_spelling_do_not_overlap() -> None:
    check_output_root("s3://arc/scans2", "s3://arc/colour2", KNOWN, name="new")


def test_a_collection_submitted_again_is_not_compared_with_itself() -> None:
    check_output_root("s3://arc/scans", "s3://arc/colour", KNOWN, name="1920s")


def test_a_link_into_another_collections_source_is_seen_through(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    link = tmp_path / "colour"
    link.symlink_to(scans)
    known = [CollectionRoots(1, "1920s", str(scans), str(tmp_path / "out"))]

    with pytest.raises(OverlappingOutput, match="source"):
        check_output_root(tmp_path / "new", link / "sub", known, name="new")


def _submit(
    sessions: sessionmaker[Session], name: str, source: Path, output: Path, **kwargs: Any
) -> Any:
    return submit(
        sessions,
        name=name,
        source=source,
        output=output,
        storage=open_storage(source),
        send=None,
        max_in_flight=10,
        **kwargs,
    )


def test_submit_refuses_an_output_that_holds_the_source_and_registers_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    scans = tmp_path / "hz" / "scans"
    write_images(scans, ["p000.png", "box1/p000.png"])

    with pytest.raises(OverlappingOutput, match="contains the source"):
        _submit(sessions, "box1", scans / "box1", scans)

    assert count_rows(sessions) == {"collections": 0, "images": 0}
    summary = _submit(sessions, "box1", scans / "box1", scans, force=True)
    assert summary.new == 1


def test_submit_refuses_another_collections_source_or_output(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    write_images(tmp_path / "a", ["p1.png"])
    write_images(tmp_path / "b", ["p1.png"])
    _submit(sessions, "a", tmp_path / "a", tmp_path / "colour")

    with pytest.raises(OverlappingOutput, match="the output .* of collection 'a'"):
        _submit(sessions, "b", tmp_path / "b", tmp_path / "colour")
    with pytest.raises(OverlappingOutput, match="the source .* of collection 'a'"):
        _submit(sessions, "b", tmp_path / "b", tmp_path / "a" / "colour")

    assert count_rows(sessions) == {"collections": 1, "images": 1}
    _submit(sessions, "a", tmp_path / "a", tmp_path / "colour")  # a resubmission is fine


@pytest.mark.s3
def test_s3_submissions_overlap_on_whole_key_segments(
    sessions: sessionmaker[Session], s3_endpoint_url: str, s3_bucket: str
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    png = io.BytesIO()
    PILImage.new("L", (8, 8), 90).save(png, format="PNG")
    for key in ("scans/p000.png", "scans/box1/p000.png", "scans2/p000.png"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=png.getvalue())
    etag = client.head_object(Bucket=s3_bucket, Key="scans/p000.png")["ETag"]
    root = f"s3://{s3_bucket}"

    def submit_s3(name: str, source: str, output: str) -> Any:
        storage = open_storage(
            source, StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1")
        )
        return submit(
            sessions,
            name=name,
            source=source,
            output=output,
            storage=storage,
            send=None,
            max_in_flight=10,
        )

    with pytest.raises(OverlappingOutput, match="contains the source"):
        submit_s3("box1", f"{root}/scans/box1", f"{root}/scans")
    submit_s3("scans", f"{root}/scans", f"{root}/colour")
    submit_s3("scans2", f"{root}/scans2", f"{root}/colour2")  # scans2 is not inside scans
    with pytest.raises(OverlappingOutput, match="of collection 'scans'"):
        submit_s3("late", f"{root}/scans2", f"{root}/colour/late")

    assert count_rows(sessions) == {"collections": 2, "images": 3}
    assert client.head_object(Bucket=s3_bucket, Key="scans/p000.png")["ETag"] == etag
