"""What happens to the images of a colorize task past its hard time limit.

A task colorizes one image, or a batch of up to ``batch`` images of a collection
(``workers.batches``). The limits (``PANCHRO_SOFT_TIME_LIMIT``, ``PANCHRO_TIME_LIMIT``)
are the task's: a batch must finish within them, as one image must. They are not scaled
by the batch size: the visibility timeout, the stop grace periods of the deployments and
the reaper all rely on a task never running longer than the hard limit, and the defaults
(25 and 30 minutes) are hundreds of times what a batch of a few images takes on a GPU.

Past the hard limit billiard kills the pool process, and the worker's main process,
told by Celery's ``task_failure`` signal, settles the task's images before the message
is acknowledged (:func:`record_time_limit`): it cannot ask the dead process what it was
doing, so the pool process writes the ids of the images at work into shared memory
(:class:`AtWork`, made before the pool forks) as it goes. Those images fail ("time
limit"); the others of the batch, which only waited behind them, go back to ``pending``
for the dispatcher to send again.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from catalog import (
    ImageStatus,
    held_attempt,
    held_attempts,
    mark_failed,
    release_claim,
    transaction,
)
from catalog.reasons import FailureCode

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "AtWork",
    "record_time_limit",
    "time_limit_reason",
]

logger = logging.getLogger(__name__)

#: Images of one batch that :class:`AtWork` can name (``workers.runtime.MAX_BATCH_SIZE``).
AT_WORK_SLOTS: Final = 64


class AtWork:
    """The images a pool process is working on, readable by the worker's main process.

    Made before the pool forks (shared memory); the pool process writes, the main process
    reads after the pool process was killed.
    """

    def __init__(self) -> None:
        self._ids = multiprocessing.RawArray(ctypes.c_int64, AT_WORK_SLOTS)

    def set(self, image_ids: Iterable[int]) -> None:
        """Name the images now at work (none: between steps and tasks).

        Args:
            image_ids: The images.
        """
        ids = list(image_ids)[:AT_WORK_SLOTS]
        for index in range(AT_WORK_SLOTS):
            self._ids[index] = ids[index] if index < len(ids) else 0

    def ids(self) -> list[int]:
        """Return the images named last."""
        return [image_id for image_id in self._ids if image_id]


def time_limit_reason(limit: float, batch: int = 1) -> str:
    """Return the reason recorded on an image whose process was killed at the hard limit.

    Args:
        limit: The hard time limit of a task, in seconds.
        batch: The most images its task could colorize together.

    Returns:
        A sentence that names the limit and the setting that changes it.
    """
    per = "the hard time limit per image"
    if batch > 1:
        per = f"the hard time limit of a task, here a batch of up to {batch} images"
    hint = "for very large images" if batch <= 1 else "or lower PANCHRO_BATCH_SIZE"
    return (
        f"time limit: the image was still being processed after {limit:g} s, {per}, and its "
        f"process was killed (raise PANCHRO_TIME_LIMIT or `panchro workers --time-limit` {hint})"
    )


def record_time_limit(
    sessions: sessionmaker[Session],
    image_id: int,
    task_id: str,
    limit: float,
    *,
    at_work: Iterable[int] = (),
    batch: int = 1,
) -> bool:
    """Settle the images of a task whose pool process was killed at the hard time limit.

    Runs in the worker's parent process (the pool process is gone); the message is
    acknowledged by Celery afterwards, so the collection goes on without it. The images
    the task holds that were at work fail with the time limit as reason (the task's own
    image when none was named); the others it holds go back to ``pending``.

    Args:
        sessions: The catalog.
        image_id: The image of the task.
        task_id: The task, which must still hold the images.
        limit: The hard time limit of a task, in seconds.
        at_work: The images the pool process last said it was working on.
        batch: The most images the task could colorize, for the reason.

    Returns:
        True if an image was recorded as failed; False if the task held none.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    reason = time_limit_reason(limit, batch)
    with transaction(sessions) as db:
        held = held_attempts(db, task_id) if batch > 1 else {}
        if not held:
            attempt_id = held_attempt(db, image_id, task_id)
            held = {} if attempt_id is None else {image_id: attempt_id}
        if not held:
            logger.debug(
                "image %s: time limit of task %s, but it no longer holds the image",
                image_id,
                task_id,
            )
            return False
        stuck = set(at_work) & set(held) or ({image_id} & set(held)) or set(held)
        failed = [
            stuck_id
            for stuck_id in sorted(stuck)
            if mark_failed(db, stuck_id, held[stuck_id], reason, code=FailureCode.TIME_LIMIT)
        ]
        waiting = sorted(set(held) - stuck)
        back = f"handed back: its batch was killed at the time limit while {sorted(stuck)} ran"
        for other in waiting:
            release_claim(db, other, held[other], reason=back, to=ImageStatus.PENDING)
    for failed_id in failed:
        logger.warning(
            "image %s: failed: %s",
            failed_id,
            reason,
            extra={"image_id": failed_id, "status": "failed", "duration_s": limit},
        )
    if waiting:
        logger.warning("images %s: back to pending: %s", waiting, back)
    return bool(failed)
