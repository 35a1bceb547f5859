"""The status values of images, collections and attempts (DESIGN.md's lower-case names).

Plain enums with no SQLAlchemy import, so that the command line can offer them as choices
(``panchro list --status``) without loading the database layer; ``catalog.models`` stores
them as CHECK-constrained strings.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["OPEN_STATUSES", "AttemptOutcome", "CollectionStatus", "ImageStatus"]


class ImageStatus(StrEnum):
    """Where one image is in its life: pending -> queued -> running -> done/failed."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class CollectionStatus(StrEnum):
    """Whether the dispatcher should feed a collection's images to the workers."""

    ACTIVE = "active"
    CANCELLED = "cancelled"
    DONE = "done"


class AttemptOutcome(StrEnum):
    """How one try at an image ended; an attempt still running has no outcome."""

    DONE = "done"
    OOM_RETRY = "oom_retry"
    FAILED = "failed"
    LOST = "lost"


#: Statuses of images that still need work (the dispatcher or a worker owns them).
OPEN_STATUSES: tuple[ImageStatus, ...] = (
    ImageStatus.PENDING,
    ImageStatus.QUEUED,
    ImageStatus.RUNNING,
)
