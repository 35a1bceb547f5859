"""Rows for the catalog tests: scanned images and fresh reads (a uniquely named module)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from catalog.models import Collection, Image
from catalog.registration import ScannedImage


def scanned(count: int, *, prefix: str = "img", checksum: str = "v1") -> list[ScannedImage]:
    """Return ``count`` scanned rows with distinct sources and outputs."""
    return [
        ScannedImage(
            source_uri=f"s3://scans/{prefix}/{index:06d}.tif",
            relative_path=f"{prefix}/{index:06d}.tif",
            output_uri=f"s3://colour/{prefix}/{index:06d}.tif",
            size=1000 + index,
            checksum=f"{checksum}-{index}",
            checksum_kind="etag",
        )
        for index in range(count)
    ]


def read_image(sessions: sessionmaker[Session], image_id: int) -> Image:
    """Return a fresh copy of one image row."""
    with sessions.begin() as db:
        image = db.get(Image, image_id, populate_existing=True)
        assert image is not None
        return image


def read_collection(sessions: sessionmaker[Session], collection_id: int) -> Collection:
    """Return a fresh copy of one collection row."""
    with sessions.begin() as db:
        collection = db.get(Collection, collection_id, populate_existing=True)
        assert collection is not None
        return collection
