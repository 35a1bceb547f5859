"""process_image() records what a person should know, and stamps honest provenance.

Originals already in colour get a ``source.colour`` warning, or are skipped under
``--skip-colour``; a multi-page TIFF keeps its pages in a TIFF copy and warns when its copy
cannot hold them; the upsampling method is recorded per image; a copy made with random
weights never claims a trained model. A stand-in network (instant) colours the 64x48
scans: none of this depends on what the network predicts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import add_collection, attempts_of, read_image, stub_colorizer

from catalog import AttemptOutcome, ImageStatus
from ddcolor.pipeline import Colorizer
from storage import LocalStorage
from workers.process import Outcome, ProcessStatus, process_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = "gpu3@archive-node"


@pytest.fixture(scope="module")
def stub() -> Colorizer:
    """An instant colorizer with random (untrained) weights."""
    return stub_colorizer()


def _process(sessions: sessionmaker[Session], image_id: int, colorizer: Colorizer) -> Outcome:
    return process_image(
        image_id,
        sessions=sessions,
        storage_for=lambda uri: LocalStorage(),
        colorizer=colorizer,
        worker=WORKER,
        untrained=True,
    )


def _write_colour(path: Path) -> None:
    y, x = np.mgrid[0:48, 0:64]
    grey = (x * 4).astype(np.uint8)
    scene = np.dstack([grey] * 3).astype(float)
    scene[:16] = [90, 140, 220]
    scene[16:32, :32] = [60, 130, 50]
    scene[32:, 20:] = [220, 170, 140]
    PILImage.fromarray(scene.astype(np.uint8)).save(path)


def _write_pages(path: Path) -> list[Any]:
    pages = [
        np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8) for seed in (1, 2)
    ]
    with tifffile.TiffWriter(path) as writer:
        for page in pages:
            writer.write(page, compression="zlib", metadata=None)
    return pages


def test_done_images_record_upsampling_warnings_and_untrained_provenance(
    sessions: sessionmaker[Session], source: Path, output: Path, stub: Colorizer
) -> None:
    _write_colour(source / "colour.png")
    pages = _write_pages(source / "album.tif")
    ids = add_collection(
        sessions, source, output, ["colour.png", "album.tif"], upsample="nearest", untrained=True
    )

    outcomes = [_process(sessions, ids[name], stub) for name in ids]

    assert [outcome.status for outcome in outcomes] == [ProcessStatus.DONE] * 2
    colour, album = (read_image(sessions, ids[name]) for name in ("colour.png", "album.tif"))
    assert [warning["code"] for warning in colour.warnings or []] == ["source.colour"]
    assert "--skip-colour" in (colour.warnings or [{}])[0]["message"]
    assert album.warnings is None
    assert (colour.upsample, album.upsample) == ("nearest", "nearest")
    with tifffile.TiffFile(output / "album.tif") as tif:
        assert len(tif.pages) == 2
        np.testing.assert_array_equal(tif.pages[1].asarray(), pages[1])
        text = (
            "\n".join(str(tif.pages.first.tags.valueof(code)) for code in (270, 305))
            + bytes(tif.pages.first.tags.valueof(700)).decode()
        )
    assert not re.search(r"(?<!un)trained", text, re.IGNORECASE), text
    assert "random weights" in text and "Colorized by" not in text
    for fact in (
        "<panchro:Upsample>nearest<",
        f"<panchro:Host>{WORKER}<",
        f"<panchro:SourceSHA256>{album.source_sha256}<",
        f"<panchro:Device>{album.device}<",
        "/compositeSynthetic<",
    ):
        assert fact in text, fact


def test_skip_colour_skips_an_original_in_colour_and_a_png_copy_warns_of_dropped_pages(
    sessions: sessionmaker[Session], source: Path, output: Path, stub: Colorizer
) -> None:
    _write_colour(source / "colour.png")
    _write_pages(source / "album.tif")
    ids = add_collection(
        sessions,
        source,
        output,
        ["colour.png", "album.tif"],
        untrained=True,
        options={"skip_colour": True, "output_format": "png"},
    )

    skipped = _process(sessions, ids["colour.png"], stub)
    done = _process(sessions, ids["album.tif"], stub)

    assert (skipped.status, done.status) == (ProcessStatus.SKIPPED, ProcessStatus.DONE)
    row = read_image(sessions, ids["colour.png"])
    assert (row.status, row.failure_code) == (ImageStatus.SKIPPED, "skip.colour")
    assert row.last_error is not None and "already in colour" in row.last_error
    assert "--no-skip-colour" in row.last_error and row.output_sha256 is None
    assert not (output / "colour.png").exists()
    [attempt] = attempts_of(sessions, ids["colour.png"])
    assert attempt.outcome is AttemptOutcome.DONE and attempt.finished_at is not None
    album = read_image(sessions, ids["album.tif"])
    [warning] = album.warnings or []
    assert warning["code"] == "pages.dropped"
    assert "2 pages" in warning["message"] and "PNG file holds one page" in warning["message"]
