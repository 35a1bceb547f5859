"""Recording how a try ended: out of memory at one size, done, failed or skipped."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Attempt, AttemptOutcome, Image, ImageStatus, utcnow
from catalog.transitions._common import open_attempt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """How an output was made; written on the image when it is done.

    The catalog's full record; the copy itself carries a stamp of part of it in its
    metadata (``storage.metadata.ProvenanceStamp``: model, checkpoint, input size).

    Attributes:
        output_sha256: SHA-256 of the written output.
        output_size: Size of the written output in bytes.
        input_size: Model input size in pixels that produced it.
        precision: Precision used ("fp16", "bf16", "fp32").
        sizes_tried: Every input size tried, in order, ending with ``input_size``.
        backend: Torch backend ("cuda", "rocm", "cpu").
        device: Device description ("cuda:0 NVIDIA A100").
        model_name: Official checkpoint name of the model.
        checkpoint_sha256: SHA-256 of the weights file.
        source_sha256: SHA-256 of the original's bytes as read.
        width: Width of the original in pixels.
        height: Height of the original in pixels.
        mode: Pixel mode of the original ("L", "I;16", "RGB").
        bit_depth: Bits per sample of the original.
        upsample: How the colour was brought to full resolution ("guided", "nearest").
        warnings: What a person should know about the image, each ``{"code", "message"}``
            (an original already in colour, pages not carried); empty for none.
    """

    output_sha256: str
    output_size: int
    input_size: int
    precision: str
    sizes_tried: Sequence[int] = ()
    backend: str | None = None
    device: str | None = None
    model_name: str | None = None
    checkpoint_sha256: str | None = None
    source_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    bit_depth: int | None = None
    upsample: str | None = None
    warnings: Sequence[Mapping[str, str]] = ()


class _HeldTry(NamedTuple):
    image_id: int
    number: int
    worker: str | None
    device: str | None
    started_at: datetime | None


def _held_try(db: Session, image_id: int | None, attempt_id: int) -> _HeldTry | None:
    row = db.execute(
        select(Attempt.image_id, Attempt.number, Attempt.worker, Attempt.device, Image.started_at)
        .join(Image, Image.id == Attempt.image_id)
        .where(Attempt.id == attempt_id)
    ).one_or_none()
    if row is None or (image_id is not None and row.image_id != image_id):
        logger.warning("image %s: attempt %s does not belong to it", image_id, attempt_id)
        return None
    return _HeldTry(*row)


def _finish(
    db: Session,
    image_id: int,
    attempt_id: int,
    *,
    image_values: dict[str, Any],
    attempt_values: dict[str, Any],
) -> bool:
    """Close the try ``attempt_id`` if it still holds the image; report whether it did."""
    held = _held_try(db, image_id, attempt_id)
    if held is None:
        return False
    now = utcnow()
    duration = (now - held.started_at).total_seconds() if held.started_at else None
    won = db.execute(
        update(Image)
        .where(
            Image.id == image_id,
            Image.status == ImageStatus.RUNNING,
            Image.attempts == held.number,
        )
        .values(finished_at=now, duration_s=duration, **image_values)
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if won is None:
        logger.warning(
            "image %s: try %d no longer holds the image; its result is dropped",
            image_id,
            held.number,
        )
        return False
    closed = db.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.outcome.is_(None))
        .values(finished_at=now, **attempt_values)
        .returning(Attempt.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    # The image row is locked by this transaction and still counts this try as its
    # current one, so the try cannot have been closed by anybody else.
    assert closed is not None, f"attempt {attempt_id} of image {image_id} already closed"
    return True


@database_errors()
def record_oom_retry(
    db: Session,
    attempt_id: int,
    *,
    input_size: int,
    error: str,
    precision: str | None = None,
) -> int | None:
    """Close a try that ran out of memory at one size and open the try at the next size.

    Call it once per size that failed, in order, before ``mark_done()`` or
    ``mark_failed()`` of the size that ended the ladder; each size then has its own
    ``attempts`` row with outcome ``oom_retry``.

    Args:
        db: The caller's session.
        attempt_id: The open try that ran out of memory.
        input_size: The input size in pixels that ran out of memory.
        error: The out-of-memory message.
        precision: The precision of that try.

    Returns:
        The id of the new open try (use it from now on), or None if ``attempt_id`` no
        longer holds the image.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    held = _held_try(db, None, attempt_id)
    if held is None:
        return None
    now = utcnow()
    moved = db.execute(
        update(Image)
        .where(
            Image.id == held.image_id,
            Image.status == ImageStatus.RUNNING,
            Image.attempts == held.number,
        )
        .values(attempts=held.number + 1)
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if moved is None:
        return None
    db.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id)
        .values(
            outcome=AttemptOutcome.OOM_RETRY,
            input_size=input_size,
            precision=precision,
            error=error,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    logger.info("image %s: out of memory at %d px, trying smaller", held.image_id, input_size)
    return open_attempt(
        db, held.image_id, held.number + 1, worker=held.worker, device=held.device, started_at=now
    )


@database_errors()
def mark_done(
    db: Session,
    image_id: int,
    attempt_id: int,
    provenance: Provenance,
    *,
    thumbnails: tuple[str, str] | None = None,
) -> bool:
    """Record a written output: ``running -> done`` with its provenance.

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The try that produced the output (from the claim, or from the last
            ``record_oom_retry()``).
        provenance: How the output was made.
        thumbnails: Where the thumbnails of the original and of this output were written,
            recorded with it; None keeps the ones recorded before.

    Returns:
        True if recorded; False if this try no longer holds the image (it was given up
        as lost and taken over, or the image was reset), in which case nothing changed.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    image_values: dict[str, Any] = {
        "status": ImageStatus.DONE,
        "last_error": None,
        "output_sha256": provenance.output_sha256,
        "output_size": provenance.output_size,
        "input_size": provenance.input_size,
        "sizes_tried": list(provenance.sizes_tried or [provenance.input_size]),
        "precision": provenance.precision,
        "backend": provenance.backend,
        "model_name": provenance.model_name,
        "checkpoint_sha256": provenance.checkpoint_sha256,
        "failure_code": None,
        "warnings": [dict(warning) for warning in provenance.warnings] or None,
    }
    # Fields the worker may not know keep the value they had rather than being erased.
    optional = {
        "device": provenance.device,
        "source_sha256": provenance.source_sha256,
        "width": provenance.width,
        "height": provenance.height,
        "mode": provenance.mode,
        "bit_depth": provenance.bit_depth,
        "upsample": provenance.upsample,
    }
    image_values.update({key: value for key, value in optional.items() if value is not None})
    if thumbnails is not None:
        image_values["source_thumb_uri"], image_values["output_thumb_uri"] = thumbnails
    done = _finish(
        db,
        image_id,
        attempt_id,
        image_values=image_values,
        attempt_values={
            "outcome": AttemptOutcome.DONE,
            "input_size": provenance.input_size,
            "precision": provenance.precision,
        },
    )
    if done:
        # The worker logs the change with the collection, device and duration.
        logger.debug("image %s: done at %d px", image_id, provenance.input_size)
    return done


@database_errors()
def mark_failed(
    db: Session,
    image_id: int,
    attempt_id: int,
    reason: str,
    *,
    code: str,
    input_size: int | None = None,
    precision: str | None = None,
) -> bool:
    """Record a permanent failure: ``running -> failed`` with a reason a person can act on.

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The try that failed.
        reason: Why, in words ("not an image: truncated TIFF").
        code: The same as a stable code that groups (``catalog.reasons.FailureCode``).
        input_size: The input size of the try, if the model ran.
        precision: The precision of the try, if the model ran.

    Returns:
        True if recorded; False if this try no longer holds the image.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    failed = _finish(
        db,
        image_id,
        attempt_id,
        image_values={"status": ImageStatus.FAILED, "last_error": reason, "failure_code": code},
        attempt_values={
            "outcome": AttemptOutcome.FAILED,
            "error": reason,
            "input_size": input_size,
            "precision": precision,
        },
    )
    if failed:
        # The worker logs the change with the collection, device and duration.
        logger.debug("image %s: failed (%s): %s", image_id, code, reason)
    return failed
