"""Helpers of the report tests: catalogs with images in every status, and reading a report.

Rows are inserted in one bulk statement as the scan and the workers would have left them
(status, failure code, times, thumbnails), so that ten thousand images take a fraction of
a second. Thumbnails are real JPEGs made by ``workers.thumbnails``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from catalog import create_or_get_collection, make_sessionmaker
from catalog import transaction as catalog_transaction
from catalog.models import Image
from workers.thumbnails import make_thumbnail, thumbnail_uris

#: When the made-up collection started.
STARTED = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
#: Seconds each made-up image took.
SECONDS_PER_IMAGE = 2.0


@dataclass(frozen=True)
class Row:
    """An image to make up: its path, outcome and failure code."""

    path: str
    status: str = "done"
    code: str | None = None
    error: str | None = None


@pytest.fixture
def report_sessions(
    exports_sqlite_template: Path, tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """Session factory of a fresh, migrated SQLite catalog."""
    path = tmp_path / "catalog.sqlite3"
    shutil.copyfile(exports_sqlite_template, path)
    factory = make_sessionmaker(make_url(f"sqlite:///{path}").render_as_string())
    yield factory
    factory.kw["bind"].dispose()


def colour_pixels(seed: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """HxWx3 uint8: a vivid gradient, different per seed."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(1, width - 1) + seed * 40) % 256
    blue = (y * 255 // max(1, height - 1) + seed * 90) % 256
    green = np.full_like(red, 40)
    return np.dstack([red, green, blue]).astype(np.uint8)


def write_thumbnail_pair(output: Path, output_uri: str, seed: int) -> tuple[str, str]:
    """Write a gray and a colour thumbnail where the workers would; return their URIs."""
    source_uri, colour_uri = thumbnail_uris(str(output), output_uri)
    pixels = colour_pixels(seed)
    gray = pixels.mean(axis=2).astype(np.uint8)
    for uri, data in ((source_uri, make_thumbnail(gray)), (colour_uri, make_thumbnail(pixels))):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)
    return source_uri, colour_uri


def make_collection(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path | str,
    rows: Sequence[Row],
    *,
    name: str = "1920s",
    thumbnails: dict[str, tuple[str, str]] | None = None,
    **settings: Any,
) -> dict[str, int]:
    """Add ``rows`` to a new collection, each with its outcome.

    Args:
        sessions: The catalog.
        source: The collection's source folder (nothing is read from it).
        output: Its output folder or S3 prefix.
        rows: The images.
        name: The collection's name.
        thumbnails: Thumbnail URIs of done images, by path.
        **settings: Collection settings.

    Returns:
        The image id of each path.
    """
    with catalog_transaction(sessions) as db:
        collection, _ = create_or_get_collection(db, name, str(source), str(output), **settings)
        values = []
        for index, row in enumerate(rows):
            done = row.status == "done"
            finished = row.status in ("done", "failed")
            thumbs = (thumbnails or {}).get(row.path, (None, None))
            values.append(
                {
                    "collection_id": collection.id,
                    "source_uri": str(source / row.path),
                    "relative_path": row.path,
                    "output_uri": f"{output}/{row.path}",
                    "status": row.status,
                    "failure_code": row.code,
                    "last_error": row.error,
                    "output_sha256": "0" * 64 if done else None,
                    "started_at": STARTED + timedelta(seconds=index) if finished else None,
                    "finished_at": STARTED + timedelta(seconds=index + 2) if finished else None,
                    "duration_s": SECONDS_PER_IMAGE if finished else None,
                    "input_size": 512 if done else None,
                    "precision": "fp16" if done else None,
                    "model_name": settings.get("model_name") if done else None,
                    "checkpoint_sha256": settings.get("checkpoint_sha256") if done else None,
                    "source_thumb_uri": thumbs[0],
                    "output_thumb_uri": thumbs[1],
                }
            )
        db.execute(insert(Image), values)
        ids = {
            path: image_id
            for image_id, path in db.execute(
                select(Image.id, Image.relative_path).where(Image.collection_id == collection.id)
            )
        }
    return ids


class _Parts(HTMLParser):
    """Collects a report's script blocks, count cards, failure rows and text."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, str] = {}
        self.counts: dict[str, str] = {}
        self.codes: list[str] = []
        self.tags: list[str] = []
        self._script: str | None = None
        self._count: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append(tag)
        if tag == "script":
            self._script = found.get("id") or "inline"
            self.scripts[self._script] = ""
        if tag == "div" and found.get("data-count"):
            self._count = found["data-count"]
        if tag == "tr" and found.get("data-code"):
            self.codes.append(str(found["data-code"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts[self._script] += data
        elif self._count is not None:
            self.counts[self._count] = data.replace(",", "")
            self._count = None


@dataclass
class ParsedReport:
    """A report, taken apart."""

    html: str
    counts: dict[str, int]
    codes: list[str]
    rows: list[list[Any]]
    tables: dict[str, Any]
    tags: list[str]

    def link(self, entry: list[Any] | None) -> str | None:
        """The URL a compact link entry stands for, as the page's script builds it."""
        if entry is None:
            return None
        url = str(self.tables["prefixes"][entry[0]]) + str(entry[1])
        if len(entry) > 2:
            before, after = self.tables["queries"][entry[2]]
            url += "?" + before + entry[3] + after
        return url

    def section(self, section_id: str) -> str:
        """The HTML of one ``<section id=...>``."""
        match = re.search(rf'<section id="{section_id}">(.*?)</section>', self.html, re.S)
        assert match is not None, f"no section {section_id}"
        return match.group(1)


def parse_report(path: Path) -> ParsedReport:
    """Read a written report back."""
    html = path.read_text(encoding="utf-8")
    parts = _Parts()
    parts.feed(html)
    return ParsedReport(
        html=html,
        counts={status: int(value) for status, value in parts.counts.items()},
        codes=parts.codes,
        rows=json.loads(parts.scripts["panchro-rows"]),
        tables=json.loads(parts.scripts["panchro-tables"]),
        tags=parts.tags,
    )
