"""Revision 9a2f5c3e8b17 gives failed and skipped images a code from their error text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from catalog.engine import make_engine
from catalog.reasons import FailureCode
from migrations.runner import downgrade, upgrade

#: The revision before the fill, and the fill.
BEFORE, FILL = "7c4e1a9b2d60", "9a2f5c3e8b17"

#: (status, last_error as versions of panchro wrote it, the code the fill must give).
ROWS: tuple[tuple[str, str | None, str | None], ...] = (
    (
        "failed",
        "worker died 3 times on this image (decoder crash or out of host memory?)",
        "worker.lost",
    ),
    (
        "failed",
        "time limit: the image was still being processed after 600 s, the hard time limit",
        "time_limit",
    ),
    (
        "failed",
        "time limit: the image was stopped at the soft time limit per image while writing",
        "time_limit",
    ),
    (
        "failed",
        "gave up after 5 retries: cannot write /out/a.tif: no space left on the device",
        "storage.full",
    ),
    (
        "failed",
        "gave up after 5 retries: catalog database unavailable: connection refused",
        "catalog.unavailable",
    ),
    (
        "failed",
        "gave up after 5 retries: cannot read s3://scans/a.tif now: endpoint unreachable",
        "storage.unavailable",
    ),
    (
        "failed",
        "the original is missing (no file /scans/a.tif); it was moved or deleted",
        "storage.not_found",
    ),
    (
        "failed",
        "out of memory on cuda:0 at every input size tried (512, 384, 256 px); free the device",
        "oom.floor",
    ),
    (
        "failed",
        "the output /out/a.tif already exists (sha256 0123456789ab...) and is not a file "
        "panchro wrote for this image; left untouched",
        "output.conflict",
    ),
    (
        "failed",
        "the output /scans/a.tif is the original itself; the scan is never overwritten",
        "output.unsafe",
    ),
    (
        "failed",
        "the output /x/a.tif lies outside the collection's output /out (through a link)",
        "output.unsafe",
    ),
    (
        "failed",
        "/scans/bomb.png: 100000x100000 is 10000 megapixels, over the limit of 250; a damaged",
        "size.too_large",
    ),
    ("failed", "/scans/flat.tif: the header gives an empty size (0x32)", "size.too_small"),
    ("failed", "/scans/e.jpg: the file is empty (0 bytes)", "decode.truncated"),
    (
        "failed",
        "/scans/t.jpg: cannot decode this JPEG file; it is truncated or corrupt (image file "
        "is truncated (4 bytes not processed)). Check the original",
        "decode.truncated",
    ),
    (
        "failed",
        "/scans/n.jpg: cannot decode this JPEG file; it is truncated or corrupt (not "
        "identified by this driver). Check the original",
        "decode.corrupt",
    ),
    (
        "failed",
        "/scans/a.gif: this is a GIF image (convert it to PNG); supported formats are JPEG, PNG",
        "decode.unsupported",
    ),
    (
        "failed",
        "/scans/a.jpg: this is a PDF document; supported formats are JPEG, PNG",
        "decode.not_image",
    ),
    (
        "failed",
        "/scans/f.tif: the TIFF holds floating-point or complex samples (scientific data)",
        "decode.unsupported",
    ),
    ("failed", "bf16 requested but cpu lacks it", "model.precision"),
    (
        "failed",
        "colorizing and encoding failed: JPEG cannot store alpha; write PNG, TIFF or WebP",
        "encode.failed",
    ),
    ("failed", "unexpected error while reading the original (RuntimeError: boom)", "unknown"),
    ("failed", None, "unknown"),
    ("skipped", "empty file (0 bytes)", "skip.empty"),
    (
        "skipped",
        "not an image panchro reads (JPEG, PNG, TIFF, WebP, BMP, JPEG 2000): it is text",
        "skip.not_image",
    ),
    (
        "skipped",
        "symbolic link that leads outside the source folder: not followed: it points to /x",
        "skip.link_outside",
    ),
    ("skipped", "not a regular file (a FIFO, socket or device)", "skip.not_a_file"),
    ("skipped", "already colour", "unknown"),
    # Not failed or skipped: no code, whatever the text.
    ("done", "time limit: an old error of an image done since", None),
    ("pending", None, None),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database; the test runs once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
    return factory()


def _execute(
    url: str, sql: str, rows: list[dict[str, object]] | None = None
) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), rows)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _codes(url: str) -> list[object]:
    return [code for (code,) in _execute(url, "SELECT failure_code FROM images ORDER BY id")]


def test_the_fill_codes_old_errors_keeps_given_codes_and_is_undone_by_downgrade(url: str) -> None:
    upgrade(url, BEFORE)
    _execute(
        url,
        "INSERT INTO collections (id, name, source, output, priority, status, untrained, options,"
        " created_at, updated_at) VALUES (1, 'old', '/scans', '/out', 0, 'done', false, '{}',"
        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    )
    rows = [(*row, None) for row in ROWS] + [
        ("failed", "an error a newer worker coded", None, "oom.floor")
    ]
    _execute(
        url,
        "INSERT INTO images (collection_id, source_uri, relative_path, output_uri, status,"
        " attempts, lost_attempts, last_error, failure_code)"
        " VALUES (1, :uri, :path, :out, :status, 0, 0, :error, :code)",
        [
            {
                "uri": f"/scans/{n}",
                "path": str(n),
                "out": f"/out/{n}",
                "status": status,
                "error": error,
                "code": code,
            }
            for n, (status, error, _, code) in enumerate(rows)
        ],
    )

    upgrade(url, FILL)

    expected = [code for _, _, code in ROWS] + ["oom.floor"]
    assert _codes(url) == expected
    assert {code for code in expected if code} <= {code.value for code in FailureCode}

    downgrade(url, BEFORE)
    assert set(_codes(url)) == {None}

    upgrade(url)
    assert _codes(url) == [code for _, _, code in ROWS] + ["unknown"]  # its text matches none
