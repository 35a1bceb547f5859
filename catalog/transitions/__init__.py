"""Every status change of an image, each one a conditional UPDATE that reports if it won.

::

    pending --queue_pending--> queued --claim_image--> running --mark_done----> done
       ^                         |                        |-----mark_failed--> failed
       |                         |                        |-----mark_skipped-> skipped
       |<------unqueue(_stale)---'                        |
       |<--------release_lost / worker died (redelivery)--'
       |<--retry_images-- failed, skipped, cancelled     (skipped: by a scan, or by a try)
    pending, queued --cancel_collection--> cancelled --resume_collection--> pending

Two processes may try the same change at once: two dispatchers, one message delivered
twice, a worker presumed dead that finishes after all. Each change is therefore a single
``UPDATE ... WHERE <expected state>``; exactly one of the racers matches the row and the
others see that nothing changed and step back. On PostgreSQL the row lock taken by the
UPDATE makes a later racer re-check its WHERE against the committed row; SQLite lets one
writer at a time in.

A worker that batches claims more images of the same collection for its message's try
with ``claim_more``, each one as ``claim_image`` claims it, under the message's task id.

A running image is held by one try: ``images.attempts`` equals the ``number`` of its
open ``attempts`` row. The changes a worker makes name that row (``attempt_id``) and
match ``images.attempts`` against its number, so a worker whose try was given up and
taken over cannot overwrite the newer try's result.

Every function takes the caller's session first and never commits or closes it; each
change takes the image row first and the ``attempts`` rows after, so concurrent changes
cannot deadlock.
"""

from __future__ import annotations

from catalog.transitions._common import MAX_LOST_ATTEMPTS
from catalog.transitions.batch_claims import claim_more, held_attempts, take_over
from catalog.transitions.claims import (
    Claim,
    Released,
    claim_image,
    held_attempt,
    release_claim,
    release_lost,
)
from catalog.transitions.dispatch import queue_pending, unqueue, unqueue_stale
from catalog.transitions.lifecycle import (
    RETRYABLE_STATUSES,
    cancel_collection,
    complete_collection,
    reopen_collections,
    resume_collection,
    retry_images,
)
from catalog.transitions.results import (
    Provenance,
    mark_done,
    mark_failed,
    record_oom_retry,
)
from catalog.transitions.skipping import mark_skipped

__all__ = [
    "MAX_LOST_ATTEMPTS",
    "RETRYABLE_STATUSES",
    "Claim",
    "Provenance",
    "Released",
    "cancel_collection",
    "claim_image",
    "claim_more",
    "held_attempt",
    "held_attempts",
    "complete_collection",
    "mark_done",
    "mark_failed",
    "mark_skipped",
    "queue_pending",
    "record_oom_retry",
    "release_claim",
    "release_lost",
    "resume_collection",
    "reopen_collections",
    "retry_images",
    "take_over",
    "unqueue",
    "unqueue_stale",
]
