"""A done image gets a thumbnail pair under its output, and nothing about it fails the image.

Real SQLite catalogs, ``LocalStorage`` on ``tmp_path`` and the instant stand-in network
(its colours are strong, so the copy's thumbnail is visibly in colour).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import add_collection, read_image, stub_colorizer, write_gray_png

from catalog import (
    ImageStatus,
    ScannedImage,
    create_or_get_collection,
    queue_pending,
    register_images,
    transaction,
)
from storage import LocalStorage, StorageOptions
from storage.s3 import S3Storage
from workers.process import Outcome, ProcessStatus, process_image
from workers.thumbnails import LONG_EDGE, MARKER, make_thumbnail, thumbnail_uris

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _process(sessions: sessionmaker[Session], image_id: int) -> Outcome:
    return process_image(
        image_id,
        sessions=sessions,
        storage_for=lambda uri: LocalStorage(),
        colorizer=stub_colorizer(),
        worker="cpu0@test",
    )


def _jpeg(path: Path) -> PILImage.Image:
    with PILImage.open(path) as image:
        image.load()
    return image


def _saturation(image: PILImage.Image) -> float:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def test_a_done_image_gets_a_small_gray_and_colour_thumbnail_pair_under_its_output(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "album" / "a.png", size=(640, 480))
    ids = add_collection(sessions, source, output, ["album/a.png"])

    assert _process(sessions, ids["album/a.png"]).status is ProcessStatus.DONE

    row = read_image(sessions, ids["album/a.png"])
    assert row.status is ImageStatus.DONE
    assert (row.source_thumb_uri, row.output_thumb_uri) == thumbnail_uris(
        str(output), row.output_uri
    )
    assert row.source_thumb_uri is not None and row.output_thumb_uri is not None
    assert row.source_thumb_uri.startswith(str(output / ".panchro" / "thumbs") + "/")
    original, copy = _jpeg(Path(row.source_thumb_uri)), _jpeg(Path(row.output_thumb_uri))
    for thumb in (original, copy):
        assert thumb.format == "JPEG"
        assert thumb.size == (LONG_EDGE, 192)
        assert thumb.info.get("comment") == MARKER
    assert _saturation(original) < 2.0
    assert _saturation(copy) > 20.0


def test_a_redone_image_replaces_its_thumbnails_but_a_foreign_file_is_left_alone(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_gray_png(source / "a.png")
    write_gray_png(source / "b.png")
    ids = add_collection(sessions, source, output, ["a.png", "b.png"])
    _process(sessions, ids["a.png"])
    first = Path(str(read_image(sessions, ids["a.png"]).source_thumb_uri)).read_bytes()
    foreign = Path(thumbnail_uris(str(output), str(output / "b.png"))[0])
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"somebody's file")

    write_gray_png(source / "a.png", size=(30, 20))  # changed: registered and redone
    add_collection(sessions, source, output, ["a.png"])
    with caplog.at_level(logging.WARNING, logger="workers.process"):
        assert _process(sessions, ids["a.png"]).status is ProcessStatus.DONE
        assert _process(sessions, ids["b.png"]).status is ProcessStatus.DONE

    redone = read_image(sessions, ids["a.png"])
    assert Path(str(redone.source_thumb_uri)).read_bytes() != first
    assert _jpeg(Path(str(redone.source_thumb_uri))).size == (30, 20)
    other = read_image(sessions, ids["b.png"])
    assert other.status is ImageStatus.DONE
    assert (other.source_thumb_uri, other.output_thumb_uri) == (None, None)
    assert foreign.read_bytes() == b"somebody's file"
    assert "not a thumbnail panchro wrote" in caplog.text
    assert f"image {ids['b.png']}: no thumbnails (the image is done without them)" in caplog.text


def test_a_thumbnail_that_cannot_be_written_leaves_the_image_done(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    output.mkdir(parents=True)
    (output / ".panchro").write_text("a file where the folder would go")

    with caplog.at_level(logging.WARNING, logger="workers.process"):
        outcome = _process(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.DONE and row.output_sha256 is not None
    assert (row.source_thumb_uri, row.output_thumb_uri) == (None, None)
    assert "no thumbnails (the image is done without them)" in caplog.text


@pytest.mark.s3
def test_the_thumbnails_of_an_s3_output_go_to_s3_and_a_redone_image_replaces_them(
    sessions: sessionmaker[Session], source: Path, s3_bucket: str, s3_endpoint_url: str
) -> None:
    root = f"s3://{s3_bucket}/colour"
    s3 = S3Storage(StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path"))

    def colorize(size: tuple[int, int]) -> tuple[str | None, str | None]:
        write_gray_png(source / "a.png", size=size)
        info = LocalStorage().stat(str(source / "a.png"))
        row = ScannedImage(str(source / "a.png"), "a.png", f"{root}/a.png", 1, info.checksum)
        with transaction(sessions) as db:
            collection, _ = create_or_get_collection(db, "scans", str(source), root)
            register_images(db, collection.id, [row])
            queue_pending(db, collection.id, 10)
        outcome = process_image(
            1,
            sessions=sessions,
            storage_for=lambda uri: s3 if uri.startswith("s3://") else LocalStorage(),
            colorizer=stub_colorizer(),
            worker="cpu0@test",
        )
        assert outcome.status is ProcessStatus.DONE
        image = read_image(sessions, 1)
        return image.source_thumb_uri, image.output_thumb_uri

    first = colorize((56, 40))
    again = colorize((30, 20))

    assert first == again == thumbnail_uris(root, f"{root}/a.png")
    for uri in again:
        thumb = _decoded(s3.read(str(uri)))
        assert thumb.size == (30, 20) and thumb.info.get("comment") == MARKER


def _decoded(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1200, 3000, 3), np.uint16), ((3000, 1200), np.uint8), ((48, 64, 3), np.uint8)],
)
def test_make_thumbnail_keeps_the_aspect_and_never_enlarges(
    shape: tuple[int, ...], dtype: Any
) -> None:
    pixels = np.full(shape, np.iinfo(dtype).max // 2, dtype=dtype)

    thumb = _decoded(make_thumbnail(pixels))

    height, width = shape[:2]
    scale = min(1.0, LONG_EDGE / max(height, width))
    assert thumb.size == (round(width * scale), round(height * scale))
    # Mid-gray of either bit depth comes out as mid-gray.
    assert abs(float(np.asarray(thumb).mean()) - 127.5) < 2.0


def test_make_thumbnail_shows_transparency_as_white_and_reads_the_profile() -> None:
    pixels = np.zeros((64, 64, 3), dtype=np.uint16)
    alpha = np.zeros((64, 64), dtype=np.uint16)
    alpha[:, :32] = 65535  # left half opaque black, right half transparent
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    for profile in (srgb, b"not a profile at all, just bytes"):
        thumb = np.asarray(_decoded(make_thumbnail(pixels, alpha=alpha, icc_profile=profile)))

        assert thumb[:, :28].max() < 16
        assert thumb[:, 36:].min() > 240
