"""Files written beside an image's master: access copies (``derivatives``) and its sidecar.

A worker writes them after the master and records them in the transaction that records
the image as done (:func:`record_access_files`): the ``derivatives`` rows of the image
become exactly the copies of its current master, and ``images.sidecar_uri`` names its
sidecar (or nothing). Before writing, it learns what the catalog knows of its try and of
the places it will write (:func:`held_try`, ``catalog.outputs.image_outputs_among``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Attempt, Derivative, Image, ImageStatus, utcnow

__all__ = [
    "DerivativeRecord",
    "HeldTry",
    "held_try",
    "list_derivatives",
    "record_access_files",
]


@dataclass(frozen=True)
class DerivativeRecord:
    """One access copy as written, for its ``derivatives`` row.

    Attributes:
        kind: Format of the copy (``"jpeg"``).
        long_edge: Long edge asked for, in pixels.
        uri: Where it was written.
        sha256: Hex SHA-256 of its bytes.
        size: Its size in bytes.
        width: Its width in pixels.
        height: Its height in pixels.
    """

    kind: str
    long_edge: int
    uri: str
    sha256: str
    size: int
    width: int
    height: int


@dataclass(frozen=True)
class HeldTry:
    """What the catalog holds of a running try, for the files written beside its output.

    Attributes:
        started_at: When the try claimed the image.
        worker_host: The worker's host or node name, as recorded on the image.
    """

    started_at: datetime | None
    worker_host: str | None


@database_errors()
def held_try(db: Session, image_id: int, attempt_id: int) -> HeldTry | None:
    """Return the image's claim facts if this try still holds it.

    Args:
        db: The caller's session.
        image_id: The image.
        attempt_id: The running try.

    Returns:
        Its start and worker; None if the try no longer holds the image (taken over, or
        the image was reset): then nothing more may be written for it.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    row = db.execute(
        select(Image.started_at, Image.worker_host)
        .join(Attempt, Attempt.image_id == Image.id)
        .where(
            Image.id == image_id,
            Image.status == ImageStatus.RUNNING,
            Attempt.id == attempt_id,
            Attempt.number == Image.attempts,
            Attempt.outcome.is_(None),
        )
    ).one_or_none()
    return None if row is None else HeldTry(row.started_at, row.worker_host)


@database_errors()
def record_access_files(
    db: Session,
    image_id: int,
    derivatives: Sequence[DerivativeRecord],
    sidecar_uri: str | None,
) -> None:
    """Make the image's ``derivatives`` rows and ``sidecar_uri`` those of its new output.

    Call it in the transaction of ``mark_done()``, after it reported the try as recorded.
    Rows of copies not written again (a collection that no longer asks for them) are
    removed: their files, made from an earlier output, stay where they are.

    Args:
        db: The caller's session.
        image_id: The image.
        derivatives: The copies written for its output.
        sidecar_uri: Its sidecar, or None when none was written.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    rows = db.scalars(select(Derivative).where(Derivative.image_id == image_id))
    existing = {row.uri: row for row in rows}
    keep = {record.uri for record in derivatives}
    stale = [row.id for uri, row in existing.items() if uri not in keep]
    if stale:
        db.execute(delete(Derivative).where(Derivative.id.in_(stale)))
    for record in derivatives:
        row = existing.get(record.uri)
        if row is None:
            row = Derivative(image_id=image_id, uri=record.uri)
            db.add(row)
        row.kind = record.kind
        row.long_edge = record.long_edge
        row.sha256 = record.sha256
        row.size = record.size
        row.width = record.width
        row.height = record.height
        row.created_at = utcnow()
    db.execute(
        update(Image)
        .where(Image.id == image_id)
        .values(sidecar_uri=sidecar_uri)
        .execution_options(synchronize_session=False)
    )
    db.flush()


@database_errors()
def list_derivatives(db: Session, image_id: int) -> list[Derivative]:
    """Return an image's access copies, by long edge, largest first.

    Args:
        db: The caller's session.
        image_id: The image.

    Returns:
        Its ``derivatives`` rows.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    return list(
        db.scalars(
            select(Derivative)
            .where(Derivative.image_id == image_id)
            .order_by(Derivative.long_edge.desc(), Derivative.uri)
        )
    )
