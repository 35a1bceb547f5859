"""A collection's preservation record, read in pages, and preservation events written back.

Exports (PREMIS, BagIt) and fixity checks walk collections of any size. They read images in
keyset pages (:func:`image_records`): one query for a page of images, then one query per
table for the tries, access copies and events of exactly those images, so that a page costs
four round trips however many rows hang off it and memory holds one page at a time. A fixity
check writes one ``events`` row per object it checked (:func:`record_events`).

Like every function of ``catalog``, these take the caller's session first and neither commit
nor close it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import func, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from catalog.engine import database_errors
from catalog.models import Attempt, Derivative, Event, Image, ImageStatus

__all__ = [
    "PAGE_IMAGES",
    "ImageRecord",
    "NewEvent",
    "collection_events",
    "count_digests",
    "count_images",
    "image_records",
    "record_events",
]

#: Images per page. Each page's ids go into ``IN (...)`` lists; 500 stays far below the
#: bound-parameter limits of SQLite and PostgreSQL.
PAGE_IMAGES: Final = 500

_Row = TypeVar("_Row", Attempt, Derivative, Event)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image with what hangs off it, as far as the caller asked for it.

    Attributes:
        image: The image row (status, source, output, provenance).
        attempts: Its tries, oldest first; empty when not asked for.
        derivatives: Its access copies, oldest first; empty when not asked for.
        events: Its preservation events, oldest first; empty when not asked for.
    """

    image: Image
    attempts: tuple[Attempt, ...] = ()
    derivatives: tuple[Derivative, ...] = ()
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A preservation event to record (see ``catalog.models.Event`` for the fields' words).

    Attributes:
        image_id: The image it concerns; None for the whole collection.
        event_type: PREMIS's word for it ("fixity check").
        object_role: Which object of the image ("source", "output", "derivative").
        outcome: How it ended ("ok", "changed", "missing", "error").
        detail: What a person needs to know (expected and found digests, the error).
        agent: Who did it (host and panchro version).
        occurred_at: When, timezone-aware.
    """

    image_id: int | None
    event_type: str
    object_role: str | None
    outcome: str
    detail: str | None
    agent: str | None
    occurred_at: datetime


@database_errors()
def image_records(
    db: Session,
    collection_id: int,
    *,
    after_id: int | None = None,
    limit: int = PAGE_IMAGES,
    statuses: Sequence[ImageStatus] | None = None,
    attempts: bool = False,
    derivatives: bool = False,
    events: bool = False,
) -> list[ImageRecord]:
    """Return one page of a collection's images in id order, with the rows asked for.

    Args:
        db: The caller's session.
        collection_id: The collection's id.
        after_id: Only images with a larger id (the last id of the previous page).
        limit: At most this many images.
        statuses: Only images in these statuses; None means all.
        attempts: Load each image's tries.
        derivatives: Load each image's access copies.
        events: Load each image's preservation events.

    Returns:
        The records; fewer than ``limit`` means this was the last page.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = select(Image).where(Image.collection_id == collection_id)
    if statuses is not None:
        query = query.where(Image.status.in_(list(statuses)))
    if after_id is not None:
        query = query.where(Image.id > after_id)
    images = list(db.scalars(query.order_by(Image.id).limit(limit)))
    ids = [image.id for image in images]
    tries = _by_image(db, Attempt, ids, Attempt.number) if attempts and ids else {}
    copies = _by_image(db, Derivative, ids, Derivative.id) if derivatives and ids else {}
    happened = _by_image(db, Event, ids, Event.occurred_at) if events and ids else {}
    return [
        ImageRecord(
            image,
            tuple(tries.get(image.id, ())),
            tuple(copies.get(image.id, ())),
            tuple(happened.get(image.id, ())),
        )
        for image in images
    ]


def _by_image(
    db: Session, model: type[_Row], ids: list[int], order: InstrumentedAttribute[Any]
) -> dict[int, list[_Row]]:
    """Rows of ``model`` whose ``image_id`` is one of ``ids``, grouped by image, in order."""
    column = model.image_id
    query = select(model).where(column.in_(ids)).order_by(column, order, model.id)
    grouped: dict[int, list[_Row]] = defaultdict(list)
    for row in db.scalars(query):
        grouped[row.image_id].append(row)  # type: ignore[index]
    return grouped


@database_errors()
def collection_events(db: Session, collection_id: int) -> list[Event]:
    """Return the events about a whole collection (those tied to no image), oldest first.

    Args:
        db: The caller's session.
        collection_id: The collection's id.

    Returns:
        The events.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = (
        select(Event)
        .where(Event.collection_id == collection_id, Event.image_id.is_(None))
        .order_by(Event.occurred_at, Event.id)
    )
    return list(db.scalars(query))


@database_errors()
def count_images(db: Session, collection_id: int) -> dict[str, int]:
    """Count a collection's images per status; every status appears, zero or not.

    Args:
        db: The caller's session.
        collection_id: The collection's id.

    Returns:
        ``{"pending": 0, "done": 12, ...}`` in the order of ``ImageStatus``.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    counts = {status.value: 0 for status in ImageStatus}
    rows = db.execute(
        select(Image.status, func.count())
        .where(Image.collection_id == collection_id)
        .group_by(Image.status)
    )
    for status, count in rows:
        counts[ImageStatus(status).value] = int(count)
    return counts


@database_errors()
def count_digests(db: Session, collection_id: int) -> int:
    """Count the recorded sha256 digests of a collection's files: what a fixity check reads.

    Every source read by a worker, and each done image's output and access copies.

    Args:
        db: The caller's session.
        collection_id: The collection's id.

    Returns:
        The number of files with a digest.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    mine = Image.collection_id == collection_id
    done = Image.status == ImageStatus.DONE
    sources = select(func.count()).where(mine, Image.source_sha256.is_not(None))
    outputs = select(func.count()).where(mine, done, Image.output_sha256.is_not(None))
    copies = select(func.count()).select_from(Derivative).join(Image).where(mine, done)
    return sum(int(db.scalar(query) or 0) for query in (sources, outputs, copies))


@database_errors()
def record_events(db: Session, collection_id: int, events: Iterable[NewEvent]) -> int:
    """Insert preservation events of one collection in one statement.

    Args:
        db: The caller's session.
        collection_id: The collection the events belong to.
        events: The events.

    Returns:
        How many were inserted.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    rows = [
        {
            "collection_id": collection_id,
            "image_id": event.image_id,
            "event_type": event.event_type,
            "object_role": event.object_role,
            "outcome": event.outcome,
            "detail": event.detail,
            "agent": event.agent,
            "occurred_at": event.occurred_at,
        }
        for event in events
    ]
    if rows:
        db.execute(insert(Event), rows)
    return len(rows)
