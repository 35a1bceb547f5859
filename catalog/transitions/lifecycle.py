"""Collection-wide transitions: retry, cancel, resume, and finishing a collection."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import OPEN_STATUSES, Collection, CollectionStatus, Image, ImageStatus, utcnow
from catalog.transitions._common import collection_id_of, returned_ids

logger = logging.getLogger(__name__)

#: Statuses that ``retry_images()`` may send back to ``pending``.
RETRYABLE_STATUSES: frozenset[ImageStatus] = frozenset(
    {ImageStatus.FAILED, ImageStatus.SKIPPED, ImageStatus.CANCELLED}
)


def _activate(db: Session, collection_id: int) -> None:
    db.execute(
        update(Collection)
        .where(Collection.id == collection_id, Collection.status != CollectionStatus.ACTIVE)
        .values(status=CollectionStatus.ACTIVE, updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )


@database_errors()
def retry_images(
    db: Session,
    collection: int | str,
    *,
    statuses: Iterable[ImageStatus] = (ImageStatus.FAILED,),
) -> int:
    """Send a collection's finished-but-unsuccessful images back to ``pending``.

    Their error, failure code and lost-worker count are reset (the ``attempts`` rows keep
    the history) and the collection becomes active again if anything was sent back.

    Args:
        db: The caller's session.
        collection: The collection's id or name.
        statuses: Which images: any of ``failed``, ``skipped``, ``cancelled``.

    Returns:
        How many images went back to pending.

    Raises:
        ValueError: If ``statuses`` names a status that cannot be retried.
        CollectionNotFound: If no collection has that id or name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    wanted = set(statuses)
    if not wanted <= RETRYABLE_STATUSES:
        names = sorted(status.value for status in wanted - RETRYABLE_STATUSES)
        raise ValueError(f"only failed, skipped or cancelled images can be retried, not {names}")
    collection_id = collection_id_of(db, collection)
    if not wanted:
        return 0
    ids = returned_ids(
        db,
        update(Image)
        .where(Image.collection_id == collection_id, Image.status.in_(wanted))
        .values(
            status=ImageStatus.PENDING,
            lost_attempts=0,
            last_error=None,
            failure_code=None,
            task_id=None,
            queued_at=None,
            started_at=None,
            finished_at=None,
            duration_s=None,
        )
        .returning(Image.id)
        .execution_options(synchronize_session=False),
    )
    if ids:
        _activate(db, collection_id)
    logger.info("collection %s: %d images back to pending", collection_id, len(ids))
    return len(ids)


@database_errors()
def cancel_collection(db: Session, collection: int | str) -> int:
    """Cancel a collection: its pending and queued images become ``cancelled``.

    Running images finish (a try is never interrupted half-way); messages still in the
    broker find their image cancelled and do nothing. Submitting the collection again
    resumes it.

    Args:
        db: The caller's session.
        collection: The collection's id or name.

    Returns:
        How many images were cancelled.

    Raises:
        CollectionNotFound: If no collection has that id or name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    collection_id = collection_id_of(db, collection)
    db.execute(
        update(Collection)
        .where(Collection.id == collection_id)
        .values(status=CollectionStatus.CANCELLED, updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    ids = returned_ids(
        db,
        update(Image)
        .where(
            Image.collection_id == collection_id,
            Image.status.in_([ImageStatus.PENDING, ImageStatus.QUEUED]),
        )
        .values(status=ImageStatus.CANCELLED, queued_at=None)
        .returning(Image.id)
        .execution_options(synchronize_session=False),
    )
    logger.info("collection %s: cancelled, %d images", collection_id, len(ids))
    return len(ids)


@database_errors()
def resume_collection(db: Session, collection: int | str) -> int:
    """Make a collection active again and send its cancelled images back to ``pending``.

    Args:
        db: The caller's session.
        collection: The collection's id or name.

    Returns:
        How many cancelled images went back to pending.

    Raises:
        CollectionNotFound: If no collection has that id or name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    collection_id = collection_id_of(db, collection)
    _activate(db, collection_id)
    ids = returned_ids(
        db,
        update(Image)
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.CANCELLED)
        .values(status=ImageStatus.PENDING, last_error=None, failure_code=None, finished_at=None)
        .returning(Image.id)
        .execution_options(synchronize_session=False),
    )
    logger.info("collection %s: resumed, %d cancelled images pending", collection_id, len(ids))
    return len(ids)


@database_errors()
def reopen_collections(db: Session) -> list[int]:
    """Make ``done`` collections that have images needing work ``active`` again.

    A collection is marked done by a dispatch pass that saw none of its images open; a
    registration committed at the same moment (a submit between two of its chunks, or
    right after creating the collection) can add pending images that pass did not see.
    Each pass calls this first, so such a collection is fed again at the next pass
    instead of staying done with its work undone. Its ``updated_at`` is kept: it dates
    the submission that a ``--not-before`` window counts from.

    Args:
        db: The caller's session.

    Returns:
        The ids of the collections made active again.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    open_images = exists(
        select(Image.id).where(
            Image.collection_id == Collection.id, Image.status.in_(OPEN_STATUSES)
        )
    )
    ids = returned_ids(
        db,
        update(Collection)
        .where(Collection.status == CollectionStatus.DONE, open_images)
        .values(status=CollectionStatus.ACTIVE)
        .returning(Collection.id)
        .execution_options(synchronize_session=False),
    )
    for collection_id in ids:
        logger.warning("collection %s: images left to do; active again", collection_id)
    return ids


@database_errors()
def complete_collection(db: Session, collection_id: int) -> bool:
    """Mark an active collection ``done`` once none of its images needs work any more.

    The dispatcher calls it for every active collection at the start of each pass
    (``scheduler.dispatching.dispatch``), and ``panchro run`` once its images are finished; a
    new scan with new or changed images, or a retry, makes the collection active again.

    Args:
        db: The caller's session.
        collection_id: The collection.

    Returns:
        True if the collection was active and is now done.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    open_images = exists(
        select(Image.id).where(
            Image.collection_id == collection_id, Image.status.in_(OPEN_STATUSES)
        )
    )
    done = db.execute(
        update(Collection)
        .where(
            Collection.id == collection_id,
            Collection.status == CollectionStatus.ACTIVE,
            ~open_images,
        )
        .values(status=CollectionStatus.DONE, updated_at=utcnow())
        .returning(Collection.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if done is not None:
        logger.info("collection %s: every image finished", collection_id)
    return done is not None
