"""Read-only queries of the catalog: collections, images, attempts, in-flight counts.

Like every function of ``catalog``, these take the caller's session first and neither
commit nor close it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, joinedload

from catalog.engine import database_errors
from catalog.errors import CollectionNotFound, ImageNotFound
from catalog.models import Attempt, Collection, CollectionStatus, Image, ImageStatus
from catalog.reasons import FailureCode

logger = logging.getLogger(__name__)

#: A collection given by its id or by its unique name.
CollectionRef = int | str


@database_errors()
def get_collection(db: Session, collection: CollectionRef) -> Collection:
    """Return a collection by id (``int``) or by name (``str``).

    Args:
        db: The caller's session.
        collection: The collection's id or name.

    Returns:
        The collection.

    Raises:
        CollectionNotFound: If no collection has that id or name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    if isinstance(collection, int):
        found = db.get(Collection, collection)
    else:
        found = db.scalars(select(Collection).where(Collection.name == collection)).first()
    if found is None:
        kind = "id" if isinstance(collection, int) else "name"
        raise CollectionNotFound(f"no collection with {kind} {collection!r}")
    return found


@database_errors()
def get_image(db: Session, image_id: int) -> Image:
    """Return one image by id.

    Args:
        db: The caller's session.
        image_id: The image's id.

    Returns:
        The image.

    Raises:
        ImageNotFound: If no image has that id.
        DatabaseUnavailable: If the database cannot be reached.
    """
    image = db.get(Image, image_id)
    if image is None:
        raise ImageNotFound(f"no image with id {image_id}")
    return image


@database_errors()
def get_images(db: Session, image_ids: Iterable[int]) -> list[Image]:
    """Return the images of some ids, in one query; ids with no image are left out.

    Args:
        db: The caller's session.
        image_ids: The ids.

    Returns:
        The images found, in id order.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    ids = sorted(set(image_ids))
    if not ids:
        return []
    return list(db.scalars(select(Image).where(Image.id.in_(ids)).order_by(Image.id)))


@database_errors()
def next_queued(db: Session, collection_id: int, limit: int) -> list[Image]:
    """Return a collection's queued images with the lowest ids: those sent to workers next.

    One query of the images alone (their collection is not loaded, nor checked to exist):
    a worker guessing what to read ahead asks this inside each claim.

    Args:
        db: The caller's session.
        collection_id: The collection's id.
        limit: At most this many images.

    Returns:
        The images, in id order.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = (
        select(Image)
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.QUEUED)
        .order_by(Image.id)
        .limit(limit)
    )
    return list(db.scalars(query))


@database_errors()
def list_collections(
    db: Session, *, statuses: Iterable[CollectionStatus] | None = None
) -> list[Collection]:
    """Return collections in dispatch order: highest priority first, then oldest first.

    The dispatcher feeds ``list_collections(db, statuses=[CollectionStatus.ACTIVE])`` in
    this order; honouring each collection's ``not_before`` window is its job.

    Args:
        db: The caller's session.
        statuses: Only collections in these statuses; None means all.

    Returns:
        The collections, ordered by ``priority`` descending, then by id.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = select(Collection).order_by(Collection.priority.desc(), Collection.id)
    if statuses is not None:
        query = query.where(Collection.status.in_(list(statuses)))
    return list(db.scalars(query))


@database_errors()
def list_images(
    db: Session,
    collection: CollectionRef,
    *,
    status: ImageStatus | None = None,
    limit: int | None = None,
    offset: int = 0,
    after_id: int | None = None,
    failure_code: str | None = None,
) -> list[Image]:
    """Return a collection's images in id (scan) order, optionally of one status or code.

    Each image's ``collection`` is loaded too, so the rows stay fully readable after
    the transaction ends.

    Args:
        db: The caller's session.
        collection: The collection's id or name.
        status: Only images in this status; None means all.
        limit: At most this many images; None means no limit.
        offset: Skip this many images first (for paging).
        after_id: Only images with a larger id: pages that stay exact while statuses
            change, and cost the same however deep (keyset paging).
        failure_code: Only images failed or skipped with this code; ``unknown`` also
            takes failed and skipped images that have no code.

    Returns:
        The images.

    Raises:
        CollectionNotFound: If no collection has that id or name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    collection_id = get_collection(db, collection).id
    query = (
        select(Image)
        .where(Image.collection_id == collection_id)
        .options(joinedload(Image.collection))
    )
    if status is not None:
        query = query.where(Image.status == status)
    if after_id is not None:
        query = query.where(Image.id > after_id)
    if failure_code is not None:
        query = query.where(_with_code(failure_code))
    query = query.order_by(Image.id).offset(offset).limit(limit)
    return list(db.scalars(query))


@database_errors()
def list_attempts(db: Session, image_id: int) -> list[Attempt]:
    """Return every try at one image, oldest first: the image's provenance trail.

    Args:
        db: The caller's session.
        image_id: The image's id.

    Returns:
        The attempts, ordered by their number.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = select(Attempt).where(Attempt.image_id == image_id).order_by(Attempt.number)
    return list(db.scalars(query))


@database_errors()
def count_in_flight(db: Session, collection_id: int | None = None) -> int:
    """Count the images sent to the broker but not yet claimed by a worker (``queued``).

    The dispatcher tops the broker up to its ``max_in_flight`` with this count.

    Args:
        db: The caller's session.
        collection_id: Count only this collection; None counts all collections.

    Returns:
        The number of queued images.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = select(func.count()).select_from(Image).where(Image.status == ImageStatus.QUEUED)
    if collection_id is not None:
        query = query.where(Image.collection_id == collection_id)
    return int(db.scalar(query) or 0)


@database_errors()
def count_progressing(db: Session, name: str | None, *, running_since: datetime) -> int:
    """Count the open images that can still change: pending, queued, or running recently.

    A try that started before ``running_since`` (the task time limit ago) has no live
    worker: a worker would have stopped it at its hard time limit. A running image with
    no start time counts as progressing. Such an image changes
    only when a reaper or ``panchro retry --stale`` hands it back.

    Args:
        db: The caller's session.
        name: Only the collection of this name; None counts every collection.
        running_since: Running tries that started before this time do not count.

    Returns:
        The number of images.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    query = (
        select(func.count())
        .select_from(Image)
        .where(
            or_(
                Image.status.in_([ImageStatus.PENDING, ImageStatus.QUEUED]),
                (Image.status == ImageStatus.RUNNING)
                & (Image.started_at.is_(None) | (Image.started_at >= running_since)),
            )
        )
    )
    if name is not None:
        query = query.join(Collection, Collection.id == Image.collection_id).where(
            Collection.name == name
        )
    return int(db.scalar(query) or 0)


def _with_code(code: str) -> ColumnElement[bool]:
    """The condition of images failed or skipped with ``code`` (``unknown``: or none)."""
    condition = Image.failure_code == code
    if code == FailureCode.UNKNOWN:
        given_up = Image.status.in_([ImageStatus.FAILED, ImageStatus.SKIPPED])
        condition = condition | (Image.failure_code.is_(None) & given_up)
    return condition
