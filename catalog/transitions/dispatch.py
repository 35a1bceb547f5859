"""Dispatch-side transitions: pending -> queued, and back when a message is lost."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Image, ImageStatus, utcnow
from catalog.transitions._common import returned_ids

logger = logging.getLogger(__name__)


@database_errors()
def queue_pending(db: Session, collection_id: int, limit: int) -> list[int]:
    """Move at most ``limit`` pending images of a collection to ``queued``, oldest first.

    Safe with several dispatchers: on PostgreSQL the candidates are locked with
    ``FOR UPDATE SKIP LOCKED``, so concurrent calls queue disjoint images without waiting
    for each other; SQLite runs one writer at a time.

    Args:
        db: The caller's session.
        collection_id: The collection.
        limit: The most images to queue.

    Returns:
        The ids of the images this call queued, ascending; send one task for each.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    if limit <= 0:
        return []
    # A materialized CTE runs exactly once. As a plain "id IN (subquery)" PostgreSQL
    # may re-run the subquery for every row it updates, and each run, finding the rows
    # already updated no longer pending, locks the next ones: far more than ``limit``.
    candidates = (
        select(Image.id)
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.PENDING)
        .order_by(Image.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("candidates")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    queued = returned_ids(
        db,
        update(Image)
        .where(Image.id == candidates.c.id, Image.status == ImageStatus.PENDING)
        .values(status=ImageStatus.QUEUED, queued_at=utcnow())
        .returning(Image.id)
        .execution_options(synchronize_session=False),
    )
    logger.debug("collection %s: queued %d images", collection_id, len(queued))
    return queued


@database_errors()
def unqueue(db: Session, image_ids: Iterable[int]) -> int:
    """Return queued images to ``pending``, for example after sending their tasks failed.

    Args:
        db: The caller's session.
        image_ids: The images; those no longer queued are left alone.

    Returns:
        How many images went back to pending.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    ids = list(image_ids)
    if not ids:
        return 0
    back = returned_ids(
        db,
        update(Image)
        .where(Image.id.in_(ids), Image.status == ImageStatus.QUEUED)
        .values(status=ImageStatus.PENDING, queued_at=None)
        .returning(Image.id)
        .execution_options(synchronize_session=False),
    )
    logger.info("unqueued %d of %d images: %s", len(back), len(ids), back)
    return len(back)


@database_errors()
def unqueue_stale(
    db: Session,
    *,
    queued_before: datetime,
    collection_id: int | None = None,
    keep: Collection[int] = (),
) -> int:
    """Return images queued before a time to ``pending``: their messages were lost.

    A broker that restarted without persistence forgets its messages, and an embedded
    run stopped with Ctrl-C leaves queued images behind. Re-queueing an image whose
    message is in fact still waiting is harmless: the second message finds the image
    already claimed and does nothing.

    Args:
        db: The caller's session.
        queued_before: Only images queued before this time.
        collection_id: Only this collection; None means all.
        keep: Images left queued whatever their age (their message is in the broker).

    Returns:
        How many images went back to pending.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    conditions: list[ColumnElement[bool]] = [
        Image.status == ImageStatus.QUEUED,
        Image.queued_at < queued_before,
    ]
    if collection_id is not None:
        conditions.append(Image.collection_id == collection_id)
    if keep:
        conditions.append(Image.id.not_in(sorted(keep)))
    back = db.execute(
        update(Image)
        .where(*conditions)
        .values(status=ImageStatus.PENDING, queued_at=None)
        .returning(Image.id, Image.collection_id)
        .execution_options(synchronize_session=False)
    ).all()
    for image_id, owner in sorted(back):
        logger.warning(
            "collection %s image %s: its message is lost; back to pending",
            owner,
            image_id,
            extra={"collection_id": owner, "image_id": image_id, "status": "lost"},
        )
    return len(back)
