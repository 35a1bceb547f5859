"""Recording a try that chose not to colorize its image: ``running -> skipped``.

A scan records what is not an image as skipped before any try; a worker may skip an image
only once it has read it, for a reason the collection asked for (an original already in
colour under ``--skip-colour``). The image keeps the reason and its failure code; the try
is closed as ``done`` (it finished its work: the decision is the image's status) with the
reason in its ``error`` column, since the outcomes of tries are a fixed set.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import AttemptOutcome, ImageStatus
from catalog.transitions.results import _finish

logger = logging.getLogger(__name__)


@database_errors()
def mark_skipped(
    db: Session, image_id: int, attempt_id: int, reason: str, *, failure_code: str
) -> bool:
    """Record that a running image is skipped: ``running -> skipped`` with the reason.

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The try that decided to skip it.
        reason: Why, in words that say how to have it colorized after all.
        failure_code: The stable code of the reason (``skip.colour``).

    Returns:
        True if recorded; False if this try no longer holds the image.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    skipped = _finish(
        db,
        image_id,
        attempt_id,
        image_values={
            "status": ImageStatus.SKIPPED,
            "last_error": reason,
            "failure_code": failure_code,
            "warnings": None,
        },
        attempt_values={"outcome": AttemptOutcome.DONE, "error": reason},
    )
    if skipped:
        # The worker logs the change with the collection, device and duration.
        logger.debug("image %s: skipped (%s)", image_id, failure_code)
    return skipped
