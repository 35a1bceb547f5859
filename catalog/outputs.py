"""Which files are a catalog image's own: the outputs its tries wrote, and the originals.

A worker never replaces a file at an image's output location unless it is one panchro
wrote for that image. Each try records the SHA-256 of the output just before it writes
it (``record_output_intent``), so the set of an image's own outputs is every digest its
tries recorded plus the digest of its done output: a try killed between its write and
its ``done`` record leaves a file that the next try recognises as its own.
``image_sources_among`` and ``image_outputs_among`` say which places are some image's
original or planned output, which no file written for another image may take.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, union_all, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from catalog.engine import database_errors
from catalog.models import Attempt, Image, ImageStatus

__all__ = [
    "image_outputs_among",
    "image_sources_among",
    "record_output_intent",
    "recorded_outputs",
]


@database_errors()
def recorded_outputs(db: Session, image_id: int) -> frozenset[str]:
    """Return the SHA-256 of every output panchro wrote, or set out to write, for an image.

    Args:
        db: The caller's session.
        image_id: The image.

    Returns:
        Hex digests: its done output's and those its tries recorded before writing.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    tried = select(Attempt.output_sha256).where(
        Attempt.image_id == image_id, Attempt.output_sha256.is_not(None)
    )
    done = select(Image.output_sha256).where(Image.id == image_id, Image.output_sha256.is_not(None))
    # One statement: a worker asks this for every image it writes.
    return frozenset(digest for digest in db.scalars(union_all(tried, done)) if digest)


@database_errors()
def record_output_intent(
    db: Session, image_id: int, attempt_id: int, sha256: str
) -> frozenset[str] | None:
    """Record the digest of the output a try is about to write, and return the image's own.

    Call it, and commit, before writing: if the worker dies after the write, the digest
    is already recorded and the next try recognises the file.

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The running try (from the claim or the last ``record_oom_retry()``).
        sha256: Hex SHA-256 of the output about to be written.

    Returns:
        The image's own output digests (``sha256`` included), as ``recorded_outputs()``;
        None if the try no longer holds the image (taken over or reset): write nothing.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    current_try = (
        select(Image.attempts)
        .where(Image.id == image_id, Image.status == ImageStatus.RUNNING)
        .scalar_subquery()
    )
    held = db.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.image_id == image_id,
            Attempt.outcome.is_(None),
            Attempt.number == current_try,
        )
        .values(output_sha256=sha256)
        .returning(Attempt.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if held is None:
        return None
    return recorded_outputs(db, image_id)


@database_errors()
def image_sources_among(
    db: Session, collection_ids: Collection[int], uris: Collection[str]
) -> list[str]:
    """Return which of ``uris`` are the source of an image of these collections.

    Args:
        db: The caller's session.
        collection_ids: The collections to look in (those whose source holds ``uris``).
        uris: Candidate locations, as the catalog spells source URIs.

    Returns:
        The ``uris`` that are some image's source, sorted.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    return _among(db, Image.source_uri, collection_ids, uris)


@database_errors()
def image_outputs_among(
    db: Session, collection_ids: Collection[int], uris: Collection[str]
) -> list[str]:
    """Return which of ``uris`` are the planned output of an image of these collections.

    Args:
        db: The caller's session.
        collection_ids: The collections to look in (those whose output holds ``uris``).
        uris: Candidate locations, as the catalog spells output URIs.

    Returns:
        The ``uris`` that are some image's output, sorted.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    return _among(db, Image.output_uri, collection_ids, uris)


def _among(
    db: Session, column: InstrumentedAttribute[str], ids: Collection[int], uris: Collection[str]
) -> list[str]:
    """Return the ``uris`` found in ``column`` of the images of collections ``ids``, sorted."""
    if not ids or not uris:
        return []
    found = db.scalars(
        select(column).where(Image.collection_id.in_(ids), column.in_(uris)).distinct()
    ).all()
    return sorted(found)
