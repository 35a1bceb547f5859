"""Colorize one catalog image from claim to record, without Celery: ``process_image()``.

The flow of one image (DESIGN.md); each step has its own short transaction or none, so
no transaction stays open while reading, running the model or writing::

    claim      queued -> running and a new attempts row; nothing to do if the claim is lost
    read       the original's bytes (never written) and their SHA-256, or the read-ahead's
    decode     validate and decode; an original in colour is skipped if the collection asks
    colorize   at the collection's input size; the out-of-memory ladder runs inside ddcolor
    record     one ``oom_retry`` attempt per input size that ran out of memory
    encode     the original's format family with provenance metadata (``workers.colorizing``)
    write      atomically, only at the planned location, never over a file that is not
               an output recorded for this image (its SHA-256 is recorded just before)
    record     done with full provenance, or failed with a reason a person can act on

The steps live in :mod:`workers.steps` and the handling of errors in
:mod:`workers.batches`: one image is a batch of one, so a single image and a batch share
every line. A failure that may pass (``workers.errors.RETRYABLE``) hands the image back
(``running -> queued``, the attempt closed) and propagates, so that the Celery task
retries and claims it again; on the last retry (``give_up``) the image fails instead. A
failure that is the worker's (``workers.errors.WORKER_FAULTS``: other weights than the
collection's, storage credentials refused or missing) hands the image back the same way
and propagates, never retried and never failing the image: the task stops the worker.
Any other error fails the image once, with ``last_error`` and the attempt closed. An
interrupt hands the image back and propagates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catalog import ImageStatus
from workers.batches import process_batch
from workers.outcomes import Outcome, ProcessStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer
    from workers.readahead import ReadAhead, StorageFor

__all__ = [
    "Outcome",
    "ProcessStatus",
    "process_image",
]


def process_image(
    image_id: int,
    *,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    worker: str,
    task_id: str | None = None,
    device: str | None = None,
    untrained: bool = False,
    read_ahead: ReadAhead | None = None,
    retries: int = 0,
    give_up: bool = False,
    release_to: ImageStatus = ImageStatus.QUEUED,
) -> Outcome:
    """Colorize one queued image of the catalog and record the result.

    Idempotent: a second delivery of a message finds the image done (or held by another
    try) and returns ``NOT_CLAIMED`` without touching anything. A redelivery with the
    same ``task_id`` after a worker died takes the image over (see ``claim_image``).

    Args:
        image_id: The catalog image.
        sessions: The catalog's session factory.
        storage_for: Returns the store of a location.
        colorizer: The loaded model.
        worker: Host or node name, recorded on the attempt and the image.
        task_id: Id of the broker message, so that its redelivery can take over.
        device: Device description recorded at claim time; None for the model's.
        untrained: The weights are random: said loudly in the output and the catalog.
        read_ahead: Where a prefetched original may be waiting; it is also told to
            start on the probable next image.
        retries: Retries of the message so far, for the reason when giving up.
        give_up: Record a failure that may pass as ``failed`` ("gave up after N
            retries") instead of handing the image back.
        release_to: Status an image is handed back in: ``queued`` when a retry of the
            message will come, ``pending`` when none will (an interrupted local run).

    Returns:
        What was done.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached (retry later).
        StorageUnavailable: If a store cannot be reached (retry later); the image was
            handed back.
        SchemaMismatch: If the catalog database was never migrated.
        WorkerSetupError: If this worker cannot colorize the image (other weights than
            the collection's); the image was handed back.
        StorageMisconfigured: If a store refuses this worker (credentials, endpoint, a
            bucket it cannot see); the image was handed back.
        KeyboardInterrupt: If interrupted; the image was handed back.
    """
    (outcome,) = process_batch(
        [image_id],
        sessions=sessions,
        storage_for=storage_for,
        colorizer=colorizer,
        worker=worker,
        task_id=task_id,
        device=device,
        untrained=untrained,
        read_ahead=read_ahead,
        retries=retries,
        give_up=give_up,
        release_to=release_to,
    )
    return outcome
