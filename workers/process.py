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

This is the one place where broad exceptions are caught. A failure that may pass
(``workers.errors.RETRYABLE``) hands the image back (``running -> queued``, the attempt
closed) and propagates, so that the Celery task retries and claims it again; on the last
retry (``give_up``) the image fails instead. A failure that is the worker's
(``workers.errors.WORKER_FAULTS``: other weights than the collection's, storage
credentials refused or missing) hands the image back the same way and propagates, never
retried and never failing the image: the task stops the worker. Any other error fails
the image once, with ``last_error`` and the attempt closed. An interrupt hands the image
back and propagates.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from catalog import (
    OUTPUT_FORMAT_OPTION,
    CatalogError,
    Claim,
    ImageStatus,
    claim_image,
    get_collection,
    get_image,
    mark_done,
    mark_failed,
    record_oom_retry,
    release_claim,
    transaction,
)
from ddcolor.device import describe_device
from ddcolor.errors import OutOfMemoryAtMinimumSize
from ddcolor.registry import size_ladder
from workers.access_files import AccessPlan, write_access_files
from workers.colorizing import colorize_original, read_original
from workers.errors import (
    RETRYABLE,
    WORKER_FAULTS,
    describe_failure,
    failure_code,
    is_named_failure,
)
from workers.image_log import ImageLog
from workers.outcomes import Outcome, ProcessStatus
from workers.outputs import OutputPlan, check_output, plan_output, write_output
from workers.provenance import catalog_provenance
from workers.source_checks import colour_skip_reason, record_colour_skip, skips_colour
from workers.thumbnails import write_thumbnails
from workers.weights import check_weights

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer
    from workers.readahead import ReadAhead, StorageFor

__all__ = [
    "Outcome",
    "ProcessStatus",
    "process_image",
]

logger = logging.getLogger(__name__)

#: Longest failure reason stored in the catalog, in characters; the log has all of it.
MAX_REASON_CHARS: Final = 2_000
#: What the worker was doing in each phase, for failure reasons.
_DOING: Final = {
    "read": "reading the original",
    "decode": "decoding the original",
    "colorize": "colorizing and encoding",
    "write": "writing the output",
    "record": "recording the result",
}


@dataclass(frozen=True)
class _Job:
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
class _Try:
    """The state of the running try, for whoever closes it."""

    attempt_id: int
    phase: str = "read"
    input_size: int | None = None
    precision: str | None = None
    sizes_tried: tuple[int, ...] = ()
    out_of_memory_steps: int = 0
    read_ahead: bool = False


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
    began = time.perf_counter()
    if device is None:
        device = str(describe_device(colorizer.device))
    log = ImageLog(logger, image_id, device)
    with transaction(sessions) as db:
        claim = claim_image(db, image_id, worker=worker, device=device[:128], task_id=task_id)
        job = _job(db, claim, worker) if claim is not None else None
    if job is None:
        log.info("not claimed by %s: finished, cancelled or held by another try", worker)
        return Outcome(image_id, ProcessStatus.NOT_CLAIMED, seconds=time.perf_counter() - began)
    log.claimed(job.collection, job.claim.collection_id)
    log.changed(
        logging.INFO,
        "running",
        "running: claimed by %s on %s (try %d)",
        worker,
        device,
        job.claim.attempt_number,
    )
    attempt = _Try(job.claim.attempt_id)
    try:
        outcome = _run(
            job, attempt, sessions, storage_for, colorizer, untrained, read_ahead, log, began
        )
    except WORKER_FAULTS as exc:
        log.warning("this worker cannot work (%s); handing the image back", exc)
        _hand_back(sessions, job, attempt, f"handed back: {exc}", release_to, log)
        raise
    except RETRYABLE as exc:
        if give_up:
            reason = f"gave up after {retries} retries: {exc}"
            return _fail(sessions, job, attempt, reason, failure_code(exc), log, began)
        log.warning("%s; handing the image back for a retry", exc)
        _hand_back(sessions, job, attempt, f"will retry: {exc}", release_to, log)
        raise
    except Exception as exc:
        reason = describe_failure(exc, _DOING[attempt.phase])
        code = failure_code(exc, encoding=attempt.phase == "colorize")
        if not is_named_failure(exc):
            log.exception("unexpected error while %s", _DOING[attempt.phase])
        return _fail(sessions, job, attempt, reason, code, log, began)
    except KeyboardInterrupt:
        _hand_back(sessions, job, attempt, "interrupted before it finished", release_to, log)
        raise
    return _finished(outcome, began)


def _job(db: Session, claim: Claim, worker: str) -> _Job:
    collection = get_collection(db, claim.collection_id)
    image = get_image(db, claim.image_id)
    output_format = (collection.options or {}).get(OUTPUT_FORMAT_OPTION)
    return _Job(
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


def _run(
    job: _Job,
    attempt: _Try,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    untrained: bool,
    read_ahead: ReadAhead | None,
    log: ImageLog,
    claimed_at: float,
) -> Outcome:
    """Read, colorize, write and record; errors go to ``process_image``'s handlers."""
    claim = job.claim
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
        read_ahead.after_claim(claim.collection_id)
        original = read_ahead.take(claim.image_id, claim.source_uri, job.source_checksum)
    attempt.read_ahead = original is not None
    if original is None:

        def decoding() -> None:
            attempt.phase = "decode"

        original = read_original(
            storage_for(claim.source_uri), claim.source_uri, on_decode=decoding
        )
    decoded = original.decoded
    read_seconds = time.perf_counter() - began
    skip = colour_skip_reason(decoded) if job.skip_colour else None
    if skip is not None:
        if not record_colour_skip(sessions, claim.image_id, attempt.attempt_id, skip):
            log.warning("the try was taken over meanwhile; its skip is not recorded")
            return _outcome(job, attempt, ProcessStatus.DROPPED)
        log.changed(logging.INFO, "skipped", "skipped: %s", skip, began=claimed_at)
        return _outcome(job, attempt, ProcessStatus.SKIPPED, reason=skip)

    attempt.phase = "colorize"
    size = job.input_size or colorizer.size
    precision = colorizer.resolve_precision(job.precision or colorizer.precision)
    attempt.input_size, attempt.precision = size, precision
    try:
        colorized = colorize_original(
            colorizer,
            original,
            size=size,
            upsample=job.upsample,
            precision=precision,
            output_format=job.output_format,
            untrained=untrained,
            host=job.worker,
        )
    except OutOfMemoryAtMinimumSize:
        ladder = size_ladder(size)
        attempt.sizes_tried, attempt.out_of_memory_steps = ladder, len(ladder)
        _record_out_of_memory(sessions, attempt, ladder[:-1])
        attempt.input_size = ladder[-1]
        raise
    result = colorized.result
    attempt.input_size, attempt.precision = result.size, result.precision
    attempt.sizes_tried = result.sizes_tried
    attempt.out_of_memory_steps = len(result.sizes_tried) - 1
    if not _record_out_of_memory(sessions, attempt, result.sizes_tried[:-1]):
        log.warning("the try was taken over meanwhile; nothing written")
        return _outcome(job, attempt, ProcessStatus.DROPPED)

    attempt.phase = "write"
    began_write = time.perf_counter()
    output_sha256 = write_output(
        sessions,
        storage_for(claim.output_uri),
        image_id=claim.image_id,
        attempt_id=attempt.attempt_id,
        uri=claim.output_uri,
        data=colorized.data,
        extension=colorized.extension,
    )
    if output_sha256 is None:
        log.warning("the try was taken over meanwhile; nothing written")
        return _outcome(job, attempt, ProcessStatus.DROPPED)
    write_seconds = time.perf_counter() - began_write

    attempt.phase = "record"
    provenance = catalog_provenance(
        colorizer, original, colorized, output_sha256=output_sha256, untrained=untrained
    )
    access = write_access_files(
        sessions, storage_for, job.access, attempt.attempt_id, colorized, original, provenance
    )
    with transaction(sessions) as db:
        recorded = mark_done(db, claim.image_id, attempt.attempt_id, provenance)
        if recorded:
            access.record(db, claim.image_id)
    if not recorded:
        log.warning("the try was taken over meanwhile; its output stays but is not recorded")
        return _outcome(job, attempt, ProcessStatus.DROPPED)
    for warning in colorized.warnings:
        log.warning("warning %s: %s", warning["code"], warning["message"])
    write_thumbnails(sessions, storage_for, job, output_sha256, decoded, result.image, log)
    timings = f"read {read_seconds:.2f} s{' (ahead)' if attempt.read_ahead else ''}, model "
    timings += (
        f"{result.network_seconds:.2f} of {result.seconds:.2f} s, write {write_seconds:.2f} s"
    )
    log.changed(
        logging.INFO,
        "done",
        "done in %.2f s: %s at %d px, %s, tried %s, on %s (%s) -> %s",
        time.perf_counter() - claimed_at,
        decoded.mode_description,
        result.size,
        result.precision,
        list(result.sizes_tried),
        result.device,
        timings,
        claim.output_uri,
        began=claimed_at,
    )
    return _outcome(job, attempt, ProcessStatus.DONE, output_uri=claim.output_uri)


def _record_out_of_memory(
    sessions: sessionmaker[Session], attempt: _Try, sizes: Iterable[int]
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


def _outcome(job: _Job, attempt: _Try, status: ProcessStatus, **fields: Any) -> Outcome:
    return Outcome(
        job.claim.image_id,
        status,
        collection_id=job.claim.collection_id,
        input_size=attempt.input_size,
        sizes_tried=attempt.sizes_tried,
        precision=attempt.precision,
        out_of_memory_steps=attempt.out_of_memory_steps,
        read_ahead=attempt.read_ahead,
        **fields,
    )


def _finished(outcome: Outcome, began: float) -> Outcome:
    return dataclasses.replace(outcome, seconds=time.perf_counter() - began)


def _fail(
    sessions: sessionmaker[Session],
    job: _Job,
    attempt: _Try,
    reason: str,
    code: str,
    log: ImageLog,
    began: float,
) -> Outcome:
    """Record the image as failed, with its reason and code, and close its attempt."""
    reason = reason[:MAX_REASON_CHARS]
    ran = attempt.phase in ("colorize", "write", "record")
    with transaction(sessions) as db:
        recorded = mark_failed(
            db,
            job.claim.image_id,
            attempt.attempt_id,
            reason,
            code=code,
            input_size=attempt.input_size if ran else None,
            precision=attempt.precision if ran else None,
        )
    if recorded:
        log.changed(logging.WARNING, "failed", "failed (%s): %s", code, reason, began=began)
    else:
        log.warning("failed (%s), but the try was taken over meanwhile; not recorded", reason)
    status = ProcessStatus.FAILED if recorded else ProcessStatus.DROPPED
    return _finished(_outcome(job, attempt, status, reason=reason), began)


def _hand_back(
    sessions: sessionmaker[Session],
    job: _Job,
    attempt: _Try,
    reason: str,
    status: ImageStatus,
    log: ImageLog,
) -> None:
    """Release the claim so that the next try claims the image normally."""
    try:
        with transaction(sessions) as db:
            released = release_claim(
                db, job.claim.image_id, attempt.attempt_id, reason=reason, to=status
            )
    except CatalogError as exc:
        # A redelivery of the same message takes the running image over.
        log.warning("could not hand the image back (%s); it stays running", exc)
        return
    if released:
        change = "retrying" if status is ImageStatus.QUEUED else "released"
        log.changed(logging.INFO, change, "%s (back to %s): %s", change, status.value, reason)
