"""The last steps of a try: write the encoded copies and record them done, per batch.

``workers.batches`` takes the copies a batch encoded through these, costing the catalog
two transactions for the whole batch::

    record_intents  the SHA-256 of each copy about to be written, one transaction
    write_step      each copy written (over nothing of another's), its access files and
                    thumbnails
    record_done     done with full provenance, access files and thumbnails recorded, one
                    transaction
    done_step       each image's log line and outcome

The intents are committed before any copy is written: a try that dies after its write
leaves files the next try knows as the image's own (``workers.outputs``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalog import mark_done, record_output_intent, transaction
from workers.access_files import WrittenAccessFiles, write_access_files
from workers.colorizing import ColorizedCopy
from workers.outcomes import Outcome, ProcessStatus
from workers.outputs import write_output
from workers.provenance import catalog_provenance
from workers.steps import ImageWork
from workers.thumbnails import Thumbnails, write_thumbnail_files

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from catalog import Provenance
    from ddcolor.pipeline import Colorizer
    from workers.readahead import StorageFor

__all__ = ["Finishing", "done_step", "record_done", "record_intents", "write_step"]


@dataclass
class Finishing:
    """An image between its encoded copy and its ``done`` record.

    Attributes:
        work: The image.
        copy: Its encoded copy.
        sha256: SHA-256 of ``copy.data``.
        ours: The image's own output digests (``sha256`` among them), once the intent to
            write was recorded; None if the try was taken over before.
        write_seconds: Time spent writing the copy, in seconds.
        provenance: What is recorded with ``done``, once written.
        access: The access files written beside the copy.
        thumbnails: The thumbnail pair written, if one could be.
        recorded: Whether it was recorded done (False: its try was taken over).
    """

    work: ImageWork
    copy: ColorizedCopy
    sha256: str = field(init=False)
    ours: frozenset[str] | None = None
    write_seconds: float = 0.0
    provenance: Provenance | None = None
    access: WrittenAccessFiles | None = None
    thumbnails: Thumbnails | None = None
    recorded: bool = False

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.copy.data).hexdigest()


def record_intents(sessions: sessionmaker[Session], finishing: Sequence[Finishing]) -> None:
    """Record the SHA-256 of every copy about to be written, in one transaction.

    Sets each one's ``ours`` (None if its try was taken over meanwhile). Committed before
    any copy is written: a try that dies after its write leaves a file the next try knows
    as the image's own (``workers.outputs``).
    """
    with transaction(sessions) as db:
        for item in finishing:
            item.work.attempt.phase = "write"
            claim = item.work.job.claim
            item.ours = record_output_intent(
                db, claim.image_id, item.work.attempt.attempt_id, item.sha256
            )


def write_step(
    item: Finishing,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    untrained: bool,
) -> Finishing | Outcome:
    """Write the copy (its intent recorded, its phase set), its access files and thumbnails.

    Returns:
        The image, ready to be recorded done; ``DROPPED`` if the try was taken over
        before its intent was recorded (nothing written).
    """
    work = item.work
    job, attempt, claim, log = work.job, work.attempt, work.job.claim, work.log
    original = work.original
    assert original is not None
    if item.ours is None:
        log.warning("the try was taken over meanwhile; nothing written")
        return work.finished(ProcessStatus.DROPPED)
    began_write = time.perf_counter()
    write_output(
        storage_for(claim.output_uri),
        claim.output_uri,
        item.copy.data,
        extension=item.copy.extension,
        ours=item.ours,
    )
    item.write_seconds = time.perf_counter() - began_write
    attempt.phase = "record"
    item.provenance = catalog_provenance(
        colorizer, original, item.copy, output_sha256=item.sha256, untrained=untrained
    )
    item.access = write_access_files(
        sessions, storage_for, job.access, attempt.attempt_id, item.copy, original, item.provenance
    )
    item.thumbnails = write_thumbnail_files(
        storage_for, job, original.decoded, item.copy.result.image, log
    )
    return item


def record_done(
    sessions: sessionmaker[Session],
    finishing: Sequence[Finishing],
    *,
    also: Callable[[Session], None] | None = None,
) -> None:
    """Record every written image done, with its access files and thumbnails, at once.

    One transaction for the whole batch: a batch of N images costs the catalog one
    round trip to record them all. Sets each one's ``recorded`` (False: its try was
    taken over meanwhile).

    Args:
        sessions: The catalog.
        finishing: The images, written.
        also: More work for the same transaction (claiming a run's next batch).
    """
    with transaction(sessions) as db:
        for item in finishing:
            image_id, attempt_id = item.work.image_id, item.work.attempt.attempt_id
            assert item.provenance is not None and item.access is not None
            thumbs = item.thumbnails
            item.recorded = mark_done(
                db,
                image_id,
                attempt_id,
                item.provenance,
                thumbnails=None if thumbs is None else (thumbs.source_uri, thumbs.output_uri),
            )
            if item.recorded:
                item.access.record(db, image_id)
        if also is not None:
            also(db)


def done_step(item: Finishing) -> Outcome:
    """Log what was done and return the outcome of an image :func:`record_done` recorded.

    Returns:
        ``DONE``, or ``DROPPED`` if the try was taken over meanwhile.
    """
    work = item.work
    attempt, claim, log, original = work.attempt, work.job.claim, work.log, work.original
    assert original is not None
    if not item.recorded:
        log.warning("the try was taken over meanwhile; its output stays but is not recorded")
        return work.finished(ProcessStatus.DROPPED)
    for warning in item.copy.warnings:
        log.warning("warning %s: %s", warning["code"], warning["message"])
    result, decoded = item.copy.result, original.decoded
    timings = f"read {work.read_seconds:.2f} s{' (ahead)' if attempt.read_ahead else ''}, model "
    timings += (
        f"{result.network_seconds:.2f} of {result.seconds:.2f} s, write {item.write_seconds:.2f} s"
    )
    log.changed(
        logging.INFO,
        "done",
        "done in %.2f s: %s at %d px, %s, tried %s, on %s (%s) -> %s",
        time.perf_counter() - work.began,
        decoded.mode_description,
        result.size,
        result.precision,
        list(result.sizes_tried),
        result.device,
        timings,
        claim.output_uri,
        began=work.began,
    )
    return work.finished(ProcessStatus.DONE, output_uri=claim.output_uri)
