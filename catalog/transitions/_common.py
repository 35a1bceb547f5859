"""Pieces shared by the transition modules (not part of the public API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from catalog.errors import CollectionNotFound
from catalog.models import Attempt, AttemptOutcome, Collection

#: Tries of one image abandoned by dying workers before the image is failed instead.
MAX_LOST_ATTEMPTS = 3
#: Error written on an attempt whose worker disappeared.
LOST_ERROR = "worker lost: it died or stopped before recording a result"


def lost_reason(lost: int) -> str:
    """Return the reason written on an image failed because its workers kept dying."""
    return f"worker died {lost} times on this image (decoder crash or out of host memory?)"


def returned_ids(db: Session, statement: Any) -> list[int]:
    """Execute an UPDATE ... RETURNING id and return the ids, ascending."""
    return sorted(db.scalars(statement).all())


def collection_id_of(db: Session, collection: int | str) -> int:
    """Return the id of a collection given by id or name; raise CollectionNotFound."""
    if isinstance(collection, int):
        query = select(Collection.id).where(Collection.id == collection)
    else:
        query = select(Collection.id).where(Collection.name == collection)
    found = db.scalar(query)
    if found is None:
        raise CollectionNotFound(f"no collection {collection!r}")
    return found


def open_attempt(
    db: Session,
    image_id: int,
    number: int,
    *,
    worker: str | None,
    device: str | None,
    started_at: datetime,
) -> int:
    """Insert an open try (no outcome yet) and return its id."""
    attempt_id: int = db.execute(
        insert(Attempt)
        .values(
            image_id=image_id,
            number=number,
            worker=worker,
            device=device,
            started_at=started_at,
        )
        .returning(Attempt.id)
    ).scalar_one()
    return attempt_id


def close_open_attempts(db: Session, image_ids: Sequence[int], now: datetime) -> None:
    """Close the open tries of these images as lost."""
    if image_ids:
        db.execute(
            update(Attempt)
            .where(Attempt.image_id.in_(image_ids), Attempt.outcome.is_(None))
            .values(outcome=AttemptOutcome.LOST, error=LOST_ERROR, finished_at=now)
            .execution_options(synchronize_session=False)
        )
