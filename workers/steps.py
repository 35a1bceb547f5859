"""The steps of one image's try, shared by a single image and a batch (``workers.batches``).

Each step works on one :class:`ImageWork`: what the claim learned (:class:`Job`), the
state of the try (:class:`Try`), its log, and what the earlier steps made::

    read_step      check the output place and the weights, read and decode the original
                   (or take it from the read-ahead); skip an original in colour if asked
    colorize_step  the colorization (made by the caller: alone, or in a batch), one
                   ``oom_retry`` attempt per input size that ran out of memory, encoded
    fail           failed with a reason and a code, the attempt closed
    hand_back      running -> queued or pending, the attempt closed

Between colorize and done, ``workers.finishing`` writes the copies and records them, one
catalog transaction for the intents to write and one for done per batch.

A step returns an :class:`~workers.outcomes.Outcome` when the image is finished (skipped,
or taken over meanwhile: ``DROPPED``), and raises what it meets (the batch-wide steps of
``workers.finishing`` raise it for all their images); ``workers.batches`` decides what an
error means for the image and for the rest of its batch. No step holds a transaction open
while reading, running the model or writing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from catalog import (
    OUTPUT_FORMAT_OPTION,
    CatalogError,
    Claim,
    ImageStatus,
    get_collection,
    get_image,
    mark_failed,
    record_oom_retry,
    release_claim,
    transaction,
)
from ddcolor.errors import OutOfMemoryAtMinimumSize
from ddcolor.registry import size_ladder
from workers.access_files import AccessPlan
from workers.colorizing import ColorizedCopy, Original, encode_copy, read_original
from workers.outcomes import Outcome, ProcessStatus
from workers.outputs import OutputPlan, check_output, plan_output
from workers.source_checks import colour_skip_reason, record_colour_skip, skips_colour
from workers.weights import check_weights

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer, ColorizeResult
    from workers.image_log import ImageLog
    from workers.readahead import ReadAhead, StorageFor

__all__ = [
    "DOING",
    "MAX_REASON_CHARS",
    "ImageWork",
    "Job",
    "Try",
    "colorize_step",
    "fail",
    "hand_back",
    "load_job",
    "read_step",
]

#: Longest failure reason stored in the catalog, in characters; the log has all of it.
MAX_REASON_CHARS: Final = 2_000
#: What the worker was doing in each phase, for failure reasons.
DOING: Final = {
    "read": "reading the original",
    "decode": "decoding the original",
    "colorize": "colorizing and encoding",
    "write": "writing the output",
    "record": "recording the result",
}


@dataclass(frozen=True)
class Job:
    """What the claim transaction learned about the image and its collection."""

    claim: Claim
    collection: str
    source_checksum: str | None
    input_size: int | None
    upsample: str | None
    precision: str | None  # None when the collection leaves it to the worker (auto)
    output_format: str | None
    checkpoint_sha256: str | None
    model_name: str | None
    untrained: bool
    output: OutputPlan
    access: AccessPlan
    worker: str
    skip_colour: bool = False


@dataclass
class Try:
    """The state of the running try, for whoever closes it."""

    attempt_id: int
    phase: str = "read"
    input_size: int | None = None
    precision: str | None = None
    sizes_tried: tuple[int, ...] = ()
    out_of_memory_steps: int = 0
    read_ahead: bool = False


@dataclass
class ImageWork:
    """One claimed image on its way through the steps.

    Attributes:
        job: What the claim learned.
        attempt: The running try.
        log: The image's log.
        began: ``time.perf_counter()`` when its claim began, for durations.
        release_to: Status it is handed back in (``queued`` when its message will be
            retried, ``pending`` when none will).
        give_up: Record a failure that may pass as ``failed`` instead of handing it back.
        original: The original, once read.
        read_seconds: Time spent reading it, or waiting for the read-ahead, in seconds.
        outcome: What was done, once it is finished.
    """

    job: Job
    attempt: Try
    log: ImageLog
    began: float
    release_to: ImageStatus = ImageStatus.QUEUED
    give_up: bool = False
    original: Original | None = None
    read_seconds: float = 0.0
    outcome: Outcome | None = None

    @property
    def image_id(self) -> int:
        """The image."""
        return self.job.claim.image_id

    def settings(self, colorizer: Colorizer) -> tuple[int, str, str | None]:
        """The input size, resolved precision and upsampling its collection asks for."""
        size = self.job.input_size or colorizer.size
        precision = colorizer.resolve_precision(self.job.precision or colorizer.precision)
        return size, precision, self.job.upsample

    def finished(self, status: ProcessStatus, **fields: Any) -> Outcome:
        """Record and return the outcome of this image."""
        attempt = self.attempt
        self.outcome = Outcome(
            self.image_id,
            status,
            collection_id=self.job.claim.collection_id,
            input_size=attempt.input_size,
            sizes_tried=attempt.sizes_tried,
            precision=attempt.precision,
            out_of_memory_steps=attempt.out_of_memory_steps,
            read_ahead=attempt.read_ahead,
            seconds=time.perf_counter() - self.began,
            **fields,
        )
        return self.outcome


def load_job(db: Session, claim: Claim, worker: str) -> Job:
    """Read what a claimed image's try needs from the catalog (in the claim's transaction).

    Args:
        db: The session that claimed it.
        claim: The claim.
        worker: Host or node name of the worker.

    Returns:
        The job.
    """
    collection = get_collection(db, claim.collection_id)
    image = get_image(db, claim.image_id)
    output_format = (collection.options or {}).get(OUTPUT_FORMAT_OPTION)
    return Job(
        claim=claim,
        collection=collection.name,
        source_checksum=image.source_checksum,
        input_size=collection.input_size,
        upsample=collection.upsample,
        precision=None if collection.precision == "auto" else collection.precision,
        output_format=str(output_format) if output_format else None,
        checkpoint_sha256=collection.checkpoint_sha256,
        model_name=collection.model_name,
        untrained=collection.untrained,
        output=plan_output(db, claim, collection.output),
        access=AccessPlan.of(collection, claim),
        worker=worker,
        skip_colour=skips_colour(collection.options),
    )


def read_step(
    work: ImageWork,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    untrained: bool,
    read_ahead: ReadAhead | None,
) -> Outcome | None:
    """Check where the copy goes and the weights, then read and decode the original.

    Returns:
        The outcome if the image is finished here (skipped), else None; the original is
        in ``work.original``.
    """
    job, attempt, claim = work.job, work.attempt, work.job.claim
    check_output(job.output)
    check_weights(
        colorizer,
        untrained,
        checkpoint_sha256=job.checkpoint_sha256,
        model_name=job.model_name,
        untrained_collection=job.untrained,
    )
    began = time.perf_counter()
    original = None
    if read_ahead is not None:
        original = read_ahead.take(claim.image_id, claim.source_uri, job.source_checksum)
    attempt.read_ahead = original is not None
    if original is None:

        def decoding() -> None:
            attempt.phase = "decode"

        original = read_original(
            storage_for(claim.source_uri), claim.source_uri, on_decode=decoding
        )
    work.original = original
    work.read_seconds = time.perf_counter() - began
    skip = colour_skip_reason(original.decoded) if job.skip_colour else None
    if skip is None:
        return None
    if not record_colour_skip(sessions, claim.image_id, attempt.attempt_id, skip):
        work.log.warning("the try was taken over meanwhile; its skip is not recorded")
        return work.finished(ProcessStatus.DROPPED)
    work.log.changed(logging.INFO, "skipped", "skipped: %s", skip, began=work.began)
    return work.finished(ProcessStatus.SKIPPED, reason=skip)


def colorize_step(
    work: ImageWork,
    sessions: sessionmaker[Session],
    colorizer: Colorizer,
    untrained: bool,
    colorization: Callable[[], ColorizeResult],
) -> ColorizedCopy | Outcome:
    """Take the image's colorization, record its out-of-memory steps, encode the copy.

    Args:
        work: The image, read.
        sessions: The catalog.
        colorizer: The model.
        untrained: Whether the weights are random.
        colorization: Returns the colorization of ``work.original`` at the settings of
            :meth:`ImageWork.settings`, or raises what ended it.

    Returns:
        The encoded copy, or the outcome if the try was taken over meanwhile.

    Raises:
        OutOfMemoryAtMinimumSize: If the device ran out of memory at every size (its
            ``oom_retry`` attempts recorded).
    """
    job, attempt = work.job, work.attempt
    assert work.original is not None
    attempt.phase = "colorize"
    size, precision, _ = work.settings(colorizer)
    attempt.input_size, attempt.precision = size, precision
    try:
        result = colorization()
    except OutOfMemoryAtMinimumSize:
        ladder = size_ladder(size)
        attempt.sizes_tried, attempt.out_of_memory_steps = ladder, len(ladder)
        _record_out_of_memory(sessions, attempt, ladder[:-1])
        attempt.input_size = ladder[-1]
        raise
    attempt.input_size, attempt.precision = result.size, result.precision
    attempt.sizes_tried = result.sizes_tried
    attempt.out_of_memory_steps = len(result.sizes_tried) - 1
    colorized = encode_copy(
        colorizer,
        work.original,
        result,
        output_format=job.output_format,
        untrained=untrained,
        host=job.worker,
    )
    if not _record_out_of_memory(sessions, attempt, result.sizes_tried[:-1]):
        work.log.warning("the try was taken over meanwhile; nothing written")
        return work.finished(ProcessStatus.DROPPED)
    return colorized


def _record_out_of_memory(
    sessions: sessionmaker[Session], attempt: Try, sizes: Iterable[int]
) -> bool:
    """Close one ``oom_retry`` attempt per size; False if the try was taken over."""
    sizes = list(sizes)
    if not sizes:
        return True
    with transaction(sessions) as db:
        for size in sizes:
            next_attempt = record_oom_retry(
                db,
                attempt.attempt_id,
                input_size=size,
                error=f"out of device memory at input size {size}",
                precision=attempt.precision,
            )
            if next_attempt is None:
                return False
            attempt.attempt_id = next_attempt
    return True


def fail(sessions: sessionmaker[Session], work: ImageWork, reason: str, code: str) -> Outcome:
    """Record the image as failed, with its reason and code, and close its attempt.

    Returns:
        ``FAILED``, or ``DROPPED`` if the try was taken over meanwhile.
    """
    attempt = work.attempt
    reason = reason[:MAX_REASON_CHARS]
    ran = attempt.phase in ("colorize", "write", "record")
    with transaction(sessions) as db:
        recorded = mark_failed(
            db,
            work.image_id,
            attempt.attempt_id,
            reason,
            code=code,
            input_size=attempt.input_size if ran else None,
            precision=attempt.precision if ran else None,
        )
    if recorded:
        work.log.changed(
            logging.WARNING, "failed", "failed (%s): %s", code, reason, began=work.began
        )
    else:
        work.log.warning("failed (%s), but the try was taken over meanwhile; not recorded", reason)
    status = ProcessStatus.FAILED if recorded else ProcessStatus.DROPPED
    return work.finished(status, reason=reason)


def hand_back(sessions: sessionmaker[Session], work: ImageWork, reason: str) -> None:
    """Release the claim (to ``work.release_to``) so that the next try claims it normally."""
    status = work.release_to
    try:
        with transaction(sessions) as db:
            released = release_claim(
                db, work.image_id, work.attempt.attempt_id, reason=reason, to=status
            )
    except CatalogError as exc:
        # A redelivery of the same message takes the running image over.
        work.log.warning("could not hand the image back (%s); it stays running", exc)
        return
    if released:
        change = "retrying" if status is ImageStatus.QUEUED else "released"
        work.log.changed(logging.INFO, change, "%s (back to %s): %s", change, status.value, reason)
