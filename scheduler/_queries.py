"""Small catalog reads and the dispatch lock that ``catalog`` does not offer (private).

None of these changes a status: every status change goes through ``catalog``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ARRAY, Integer, any_, bindparam, func, select, text
from sqlalchemy.orm import Session

from catalog import Image, ImageStatus

#: Key of the PostgreSQL advisory lock that serialises the queueing step of dispatchers
#: (any fixed 64-bit number; this one spells "panchro" in ASCII).
DISPATCH_LOCK_KEY = 0x70616E6368726F


def lock_dispatch(db: Session) -> None:
    """Take the dispatchers' lock until the end of the current transaction.

    Two dispatchers that counted the queued images at the same moment would both fill
    the same free room and overshoot ``max_in_flight``. On PostgreSQL a transaction-level
    advisory lock makes them count and queue one after the other; on SQLite every write
    transaction already starts with ``BEGIN IMMEDIATE``, which does the same.

    Args:
        db: The caller's session, inside a transaction.
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK_KEY})


def relative_paths(db: Session, image_ids: Sequence[int]) -> dict[int, str]:
    """Return the relative source path of each image, for the messages' descriptions.

    On PostgreSQL the ids go as one array parameter (``id = ANY(:ids)``): a batch of a
    thousand ids as a thousand ``IN`` parameters took twice as long to bind and plan as
    to read the rows.

    Args:
        db: The caller's session.
        image_ids: The images.

    Returns:
        Image id to relative path.
    """
    if not image_ids:
        return {}
    ids = list(image_ids)
    query = select(Image.id, Image.relative_path)
    if db.get_bind().dialect.name == "postgresql":
        query = query.where(Image.id == any_(bindparam("ids", ids, type_=ARRAY(Integer))))
    else:
        query = query.where(Image.id.in_(ids))
    return {image_id: relative for image_id, relative in db.execute(query).all()}


def count_pending(db: Session, collection_id: int) -> int:
    """Count a collection's images that wait to be dispatched.

    Args:
        db: The caller's session.
        collection_id: The collection.

    Returns:
        The number of ``pending`` images.
    """
    query = (
        select(func.count())
        .select_from(Image)
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.PENDING)
    )
    return int(db.scalar(query) or 0)
