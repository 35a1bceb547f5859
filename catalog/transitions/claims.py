"""Claiming an image for a try, and giving up tries whose workers are gone."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, select, update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Attempt, AttemptOutcome, Image, ImageStatus, utcnow
from catalog.reasons import FailureCode
from catalog.transitions._common import (
    MAX_LOST_ATTEMPTS,
    close_open_attempts,
    lost_reason,
    open_attempt,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A running try at an image, held by the worker that claimed it.

    Attributes:
        image_id: The image.
        attempt_id: The open ``attempts`` row; pass it to ``mark_done()`` and friends.
        attempt_number: Its number: 1 for the image's first try.
        collection_id: The image's collection.
        source_uri: Where to read the original.
        output_uri: Where to write the result.
        relative_path: The source's path below the collection's source.
    """

    image_id: int
    attempt_id: int
    attempt_number: int
    collection_id: int
    source_uri: str
    output_uri: str
    relative_path: str


class Released(NamedTuple):
    """What ``release_lost()`` did: images back to pending, and images failed at the cap."""

    requeued: int
    failed: int


#: What a successful claim reads back from the image row.
_CLAIMED = (
    Image.attempts,
    Image.collection_id,
    Image.source_uri,
    Image.output_uri,
    Image.relative_path,
)


def _take_over(
    db: Session, image_id: int, task_id: str, holder: dict[str, Any], now: datetime
) -> Row[int, int, str, str, str] | None:
    """Give up the open try of a running image whose message came again; maybe reclaim."""
    current = db.execute(
        select(Image.attempts, Image.lost_attempts).where(Image.id == image_id)
    ).one()
    # Conditional on the try being the one just read: of two redeliveries racing for
    # the same dead try, one takes it over and the other finds nothing to do.
    still_held = (
        Image.id == image_id,
        Image.status == ImageStatus.RUNNING,
        Image.attempts == current.attempts,
        Image.task_id == task_id,
    )
    lost = current.lost_attempts + 1
    if lost >= MAX_LOST_ATTEMPTS:
        failed = db.execute(
            update(Image)
            .where(*still_held)
            .values(
                status=ImageStatus.FAILED,
                lost_attempts=lost,
                last_error=lost_reason(lost),
                failure_code=FailureCode.WORKER_LOST,
                finished_at=now,
            )
            .returning(Image.id)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if failed is not None:
            close_open_attempts(db, [image_id], now)
            logger.error("image %s: failed, %s", image_id, lost_reason(lost))
        return None
    claimed = db.execute(
        update(Image)
        .where(*still_held)
        .values(lost_attempts=lost, attempts=Image.attempts + 1, **holder)
        .returning(*_CLAIMED)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if claimed is not None:
        close_open_attempts(db, [image_id], now)
        logger.warning("image %s: worker lost (%d so far), taken over", image_id, lost)
    return claimed


@database_errors()
def claim_image(
    db: Session,
    image_id: int,
    *,
    worker: str,
    device: str | None = None,
    task_id: str | None = None,
) -> Claim | None:
    """Start a try at a queued image: ``queued -> running`` and a new ``attempts`` row.

    A second delivery of the *same* message (same ``task_id``) to an image that is
    still ``running`` means the worker that held it died (Celery redelivers an
    unacknowledged message when its worker is lost): the open try is closed as ``lost``
    and this call takes the image over, unless the image has now been lost
    ``MAX_LOST_ATTEMPTS`` times, in which case it is failed with that reason. A running
    image held under another (or no) ``task_id`` is live work of another worker, for
    example a concurrent claim that won; it is left alone.

    Args:
        db: The caller's session.
        image_id: The image named in the task.
        worker: Host or node name of the worker, recorded as provenance.
        device: Device the worker runs on, recorded as provenance.
        task_id: Id of the broker message being processed.

    Returns:
        The claim, or None when there is nothing to do: the image is not queued (already
        done, failed, cancelled, pending again, or running under another message), was
        claimed by a concurrent call, or was failed for dying workers.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    now = utcnow()
    holder = {"worker_host": worker, "device": device, "task_id": task_id, "started_at": now}
    claimed = db.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == ImageStatus.QUEUED)
        .values(
            status=ImageStatus.RUNNING,
            attempts=Image.attempts + 1,
            finished_at=None,
            duration_s=None,
            last_error=None,
            failure_code=None,
            **holder,
        )
        .returning(*_CLAIMED)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if claimed is None:
        current = db.execute(
            select(Image.status, Image.task_id).where(Image.id == image_id)
        ).one_or_none()
        if current is None:
            logger.warning("image %s: not in the catalog; nothing to claim", image_id)
            return None
        redelivered = (
            current.status is ImageStatus.RUNNING
            and task_id is not None
            and current.task_id == task_id
        )
        if not redelivered:
            logger.info("image %s: %s, not claimed by %s", image_id, current.status.value, worker)
            return None
        assert task_id is not None
        claimed = _take_over(db, image_id, task_id, holder, now)
        if claimed is None:
            return None

    attempt_id = open_attempt(
        db, image_id, claimed.attempts, worker=worker, device=device, started_at=now
    )
    # The worker logs the change with the collection, device and timings.
    logger.debug(
        "image %s: claimed by %s on %s (try %d)", image_id, worker, device, claimed.attempts
    )
    return Claim(
        image_id=image_id,
        attempt_id=attempt_id,
        attempt_number=claimed.attempts,
        collection_id=claimed.collection_id,
        source_uri=claimed.source_uri,
        output_uri=claimed.output_uri,
        relative_path=claimed.relative_path,
    )


@database_errors()
def release_lost(
    db: Session,
    *,
    started_before: datetime | None = None,
    collection_id: int | None = None,
    worker: str | None = None,
    held_task_ids: Collection[str] | None = None,
) -> Released:
    """Give up running tries whose workers are gone: back to ``pending``, or failed.

    Each image's open try is closed as ``lost`` and its ``lost_attempts`` grows by one;
    an image that reaches ``MAX_LOST_ATTEMPTS`` is failed with that reason instead of
    being queued again. Call it when no worker can still hold the tries: at the start
    of an embedded run for its collection, when the supervisor restarts a worker (its
    tries, by node name), or for the tries that no live worker reports holding.

    Args:
        db: The caller's session.
        started_before: Only tries started before this time; None means all.
        collection_id: Only this collection; None means all.
        worker: Only tries of this worker (its node name, ``images.worker_host``).
        held_task_ids: Task ids that live workers hold: given, only images running
            under another (known) task id are released.

    Returns:
        How many images went back to pending and how many were failed.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    now = utcnow()
    conditions: list[ColumnElement[bool]] = [Image.status == ImageStatus.RUNNING]
    if started_before is not None:
        conditions.append(Image.started_at < started_before)
    if collection_id is not None:
        conditions.append(Image.collection_id == collection_id)
    if worker is not None:
        conditions.append(Image.worker_host == worker)
    if held_task_ids is not None:
        conditions.append(Image.task_id.is_not(None))
        if held_task_ids:
            conditions.append(Image.task_id.not_in(sorted(held_task_ids)))
    failed = _returned_images(
        db,
        update(Image)
        .where(*conditions, Image.lost_attempts + 1 >= MAX_LOST_ATTEMPTS)
        .values(
            status=ImageStatus.FAILED,
            lost_attempts=Image.lost_attempts + 1,
            last_error=lost_reason(MAX_LOST_ATTEMPTS),
            failure_code=FailureCode.WORKER_LOST,
            finished_at=now,
        ),
    )
    requeued = _returned_images(
        db,
        update(Image)
        .where(*conditions)
        .values(
            status=ImageStatus.PENDING,
            lost_attempts=Image.lost_attempts + 1,
            task_id=None,
            queued_at=None,
        ),
    )
    close_open_attempts(db, sorted(failed) + sorted(requeued), now)
    for ids, status, what in ((requeued, "lost", "back to pending"), (failed, "failed", "")):
        for image_id, owner in sorted(ids.items()):
            logger.warning(
                "collection %s image %s: its worker is gone; %s",
                owner,
                image_id,
                what or lost_reason(MAX_LOST_ATTEMPTS),
                extra={"collection_id": owner, "image_id": image_id, "status": status},
            )
    return Released(requeued=len(requeued), failed=len(failed))


def _returned_images(db: Session, statement: Any) -> dict[int, int]:
    """Execute an UPDATE of images; return the collection of each image it changed."""
    rows = db.execute(
        statement.returning(Image.id, Image.collection_id).execution_options(
            synchronize_session=False
        )
    ).all()
    return {image_id: collection_id for image_id, collection_id in rows}


@database_errors()
def held_attempt(db: Session, image_id: int, task_id: str) -> int | None:
    """Return the open try of an image that is running under a task id, if it is.

    Args:
        db: The caller's session.
        image_id: The image.
        task_id: The broker message the try runs for.

    Returns:
        The ``attempts`` row's id, or None when the image is not running under that task.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    return db.scalar(
        select(Attempt.id)
        .join(Image, Image.id == Attempt.image_id)
        .where(Image.id == image_id, *running_under(task_id))
    )


def running_under(task_id: str) -> tuple[ColumnElement[bool], ...]:
    """The conditions of an image running under a task id, joined to its open try.

    Args:
        task_id: The broker message.

    Returns:
        The conditions, for ``where()``.
    """
    return (
        Image.status == ImageStatus.RUNNING,
        Image.task_id == task_id,
        Attempt.number == Image.attempts,
        Attempt.outcome.is_(None),
    )


@database_errors()
def release_claim(
    db: Session,
    image_id: int,
    attempt_id: int,
    *,
    reason: str,
    to: ImageStatus = ImageStatus.QUEUED,
) -> bool:
    """Give a running image back without a result: ``running -> queued`` or ``pending``.

    The try is closed as ``failed`` with the reason; ``lost_attempts`` stays, as nothing
    died. ``queued`` suits a message that will be retried (the retry claims the image as
    usual), ``pending`` a run that stopped (its images are queued again when it resumes).

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The try that holds it.
        reason: Why, written on the attempt.
        to: ``queued`` or ``pending``.

    Returns:
        True if released; False if the try no longer holds the image.

    Raises:
        ValueError: If ``to`` is neither ``queued`` nor ``pending``.
        DatabaseUnavailable: If the database cannot be reached.
    """
    if to not in (ImageStatus.QUEUED, ImageStatus.PENDING):
        raise ValueError(f"a claim is released to queued or pending, not {to.value}")
    number = db.scalar(
        select(Attempt.number).where(Attempt.id == attempt_id, Attempt.image_id == image_id)
    )
    if number is None:
        return False
    values: dict[str, Any] = {"status": to}
    if to is ImageStatus.PENDING:
        values.update(task_id=None, queued_at=None)
    won = db.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == ImageStatus.RUNNING, Image.attempts == number)
        .values(**values)
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if won is None:
        return False
    db.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.outcome.is_(None))
        .values(outcome=AttemptOutcome.FAILED, error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return True
