"""Claiming more images for the try of one message: the other images of a batch.

A worker that colorizes several images per forward (``workers.batches``) claims the image
named in its message with :func:`~catalog.transitions.claims.claim_image`, then takes up
to ``limit`` more images of the same collection under the *same* task id, here:

1. images still ``running`` under that task id: the rest of a batch whose worker died,
   whose message came again (each try is closed as ``lost`` and taken over, exactly as
   ``claim_image`` takes over the image of a redelivered message);
2. ``queued`` images, those named in ``prefer`` first (a worker's read-ahead has their
   originals already), then the lowest ids (the dispatcher sends in id order, so these
   are the next messages of the queue).

The messages of the images taken this way find them running under another task id, or
finished, and do nothing (``claim_image`` returns None). If the worker dies, its message
comes again and takes the whole batch over; if it never comes, the reaper finds the
images running under a task no live worker holds and hands them back.

On PostgreSQL the queued candidates are locked with ``FOR UPDATE SKIP LOCKED``: two
workers filling their batches at once take disjoint images without waiting on each other.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Attempt, Image, ImageStatus
from catalog.transitions.claims import Claim, claim_image, running_under

logger = logging.getLogger(__name__)


@database_errors()
def claim_more(
    db: Session,
    first: Claim,
    limit: int,
    *,
    worker: str,
    task_id: str,
    device: str | None = None,
    prefer: Collection[int] = (),
) -> list[Claim]:
    """Claim up to ``limit`` more images of ``first``'s collection under the same task id.

    Args:
        db: The caller's session (the one that claimed ``first``, so that the batch is
            claimed in one transaction).
        first: The claim of the image named in the message.
        limit: The most images to add.
        worker: Host or node name of the worker, recorded as provenance.
        task_id: Id of the broker message being processed; every image is held under it.
        device: Device the worker runs on, recorded as provenance.
        prefer: Queued images to take first (their originals are read already).

    Returns:
        The new claims: taken-over images of the same task first, then queued images in
        the order they were chosen. Fewer than ``limit`` when there are no more.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    if limit <= 0:
        return []
    claims = take_over(db, task_id, limit, worker=worker, device=device, exclude=[first.image_id])
    room = limit - len(claims)
    if room <= 0:
        return claims
    first_choice = case((Image.id.in_(sorted(prefer)), 0), else_=1) if prefer else None
    query = select(Image.id).where(
        Image.collection_id == first.collection_id,
        Image.status == ImageStatus.QUEUED,
        Image.id != first.image_id,
    )
    if first_choice is not None:
        query = query.order_by(first_choice)
    queued = db.scalars(
        query.order_by(Image.id).limit(room).with_for_update(skip_locked=True)
    ).all()
    claims += _claim(db, queued, worker=worker, device=device, task_id=task_id)
    if claims:
        logger.debug(
            "image %s: %d more image(s) claimed under task %s: %s",
            first.image_id,
            len(claims),
            task_id,
            [claim.image_id for claim in claims],
        )
    return claims


@database_errors()
def take_over(
    db: Session,
    task_id: str,
    limit: int,
    *,
    worker: str,
    device: str | None = None,
    exclude: Collection[int] = (),
) -> list[Claim]:
    """Take over up to ``limit`` images still running under a task id (its worker died).

    The message of a batch can come again after its own image was finished: the rest of
    the batch is taken over all the same (each try closed as ``lost``).

    Args:
        db: The caller's session.
        task_id: The broker message that came again.
        limit: The most images to take over.
        worker: Host or node name of the worker, recorded as provenance.
        device: Device the worker runs on, recorded as provenance.
        exclude: Images to leave alone (the one this message claimed already).

    Returns:
        The new claims, in image id order.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    if limit <= 0:
        return []
    stranded = db.scalars(
        select(Image.id)
        .where(
            Image.status == ImageStatus.RUNNING,
            Image.task_id == task_id,
            Image.id.not_in(sorted(exclude)),
        )
        .order_by(Image.id)
        .limit(limit)
    ).all()
    return _claim(db, stranded, worker=worker, device=device, task_id=task_id)


def _claim(
    db: Session, image_ids: Collection[int], *, worker: str, device: str | None, task_id: str
) -> list[Claim]:
    """Claim each image (queued, or running under ``task_id``); skip those that went."""
    claims = []
    for image_id in image_ids:
        claim = claim_image(db, image_id, worker=worker, device=device, task_id=task_id)
        if claim is not None:
            claims.append(claim)
    return claims


@database_errors()
def held_attempts(db: Session, task_id: str) -> dict[int, int]:
    """Return the images running under a task id, each with its open try.

    Args:
        db: The caller's session.
        task_id: The broker message.

    Returns:
        The ``attempts`` row's id of each image, by image id (empty when none).

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    rows = db.execute(
        select(Image.id, Attempt.id)
        .join(Attempt, Attempt.image_id == Image.id)
        .where(*running_under(task_id))
    ).all()
    return {image_id: attempt_id for image_id, attempt_id in rows}
