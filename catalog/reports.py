"""What a collection's morning report shows: its settings, counts, times, failures, rows.

``collection_report()`` gathers everything but the images in a few aggregate queries;
``report_rows()`` reads the images one page at a time (keyset by id), so a collection of
a million images is never held in one transaction or one list::

    with transaction(sessions) as db:
        report = collection_report(db, "1920s")
    after = 0
    while rows := read_page(after):      # report_rows(db, report.id, after_id=after)
        after = rows[-1].id
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Image, ImageStatus
from catalog.queries import get_collection
from catalog.reasons import FailureCode

__all__ = [
    "UNKNOWN_FAILURE_CODE",
    "CollectionReport",
    "FailureExample",
    "FailureGroup",
    "ReportRow",
    "RunShape",
    "collection_report",
    "report_rows",
]

logger = logging.getLogger(__name__)

#: Code under which failures that carry no ``failure_code`` are grouped.
UNKNOWN_FAILURE_CODE: Final = str(FailureCode.UNKNOWN)
#: Statuses whose images are grouped by failure code.
GROUPED_STATUSES: Final = (ImageStatus.FAILED, ImageStatus.SKIPPED)
#: Most failure groups reported per status; the rest are summed into one count.
MAX_GROUPS: Final = 50
#: Example images shown per failure group.
EXAMPLES_PER_GROUP: Final = 3


@dataclass(frozen=True)
class RunShape:
    """How a share of a collection's done images was actually made.

    Attributes:
        model_name: The model recorded on the images.
        checkpoint_sha256: Their checkpoint's SHA-256.
        input_size: The model input size, in pixels.
        precision: The precision used.
        upsample: How colour was brought to full resolution.
        count: Done images made this way.
    """

    model_name: str | None
    checkpoint_sha256: str | None
    input_size: int | None
    precision: str | None
    upsample: str | None
    count: int


@dataclass(frozen=True)
class FailureExample:
    """One image of a failure group."""

    image_id: int
    relative_path: str
    last_error: str | None


@dataclass(frozen=True)
class FailureGroup:
    """Failed (or skipped) images of one stable failure code.

    Attributes:
        status: ``failed`` or ``skipped``.
        code: The failure code (``decode.truncated``...), or ``unknown`` where none was
            recorded.
        count: Images in the group.
        examples: A few of them, lowest id first.
    """

    status: str
    code: str
    count: int
    examples: tuple[FailureExample, ...]


@dataclass(frozen=True)
class CollectionReport:
    """A collection's settings and the aggregates of its images.

    Attributes:
        id: The collection's id.
        name: Its name.
        settings: Its settings as submitted (source, output, model, checkpoint, size,
            precision, upsampling, untrained...), by column name.
        untrained: Whether it runs with random weights.
        counts: Images per status value; every status is present.
        total: All its images.
        first_started: When the first try started; None before any.
        last_finished: When the last image finished; None before any.
        finished: Images done or failed (what throughput counts).
        busy_seconds: Seconds spent on done images, added up.
        as_run: How the done images were made, most frequent first.
        failures: Failure groups, largest first, failed before skipped.
        other_failures: Images of the groups left out past :data:`MAX_GROUPS`.
    """

    id: int
    name: str
    settings: dict[str, Any]
    untrained: bool
    counts: dict[str, int]
    total: int
    first_started: datetime | None
    last_finished: datetime | None
    finished: int
    busy_seconds: float | None
    as_run: tuple[RunShape, ...]
    failures: tuple[FailureGroup, ...]
    other_failures: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One image as the contact sheet shows it."""

    id: int
    relative_path: str
    status: str
    failure_code: str | None
    output_uri: str
    source_thumb_uri: str | None
    output_thumb_uri: str | None


#: Collection columns shown as its settings, in order.
SETTINGS_COLUMNS: Final = (
    "source",
    "output",
    "status",
    "created_at",
    "preset",
    "input_size",
    "model_name",
    "checkpoint_sha256",
    "precision",
    "upsample",
    "untrained",
    "not_before",
    "priority",
    "options",
)


def _code_matches(code: str) -> ColumnElement[bool]:
    if code == UNKNOWN_FAILURE_CODE:
        return Image.failure_code.is_(None) | (Image.failure_code == code)
    return Image.failure_code == code


def _failure_groups(db: Session, collection_id: int) -> tuple[list[FailureGroup], int]:
    code = func.coalesce(Image.failure_code, UNKNOWN_FAILURE_CODE).label("code")
    count = func.count().label("n")
    groups: list[FailureGroup] = []
    other = 0
    for status in GROUPED_STATUSES:
        rows = db.execute(
            select(code, count)
            .where(Image.collection_id == collection_id, Image.status == status)
            .group_by(code)
            .order_by(count.desc(), code)
        ).all()
        other += sum(int(n) for _, n in rows[MAX_GROUPS:])
        for group_code, n in rows[:MAX_GROUPS]:
            examples = db.execute(
                select(Image.id, Image.relative_path, Image.last_error)
                .where(
                    Image.collection_id == collection_id,
                    Image.status == status,
                    _code_matches(str(group_code)),
                )
                .order_by(Image.id)
                .limit(EXAMPLES_PER_GROUP)
            ).all()
            groups.append(
                FailureGroup(
                    status=status.value,
                    code=str(group_code),
                    count=int(n),
                    examples=tuple(FailureExample(i, path, error) for i, path, error in examples),
                )
            )
    return groups, other


def _as_run(db: Session, collection_id: int) -> tuple[RunShape, ...]:
    count = func.count().label("n")
    columns = (
        Image.model_name,
        Image.checkpoint_sha256,
        Image.input_size,
        Image.precision,
        Image.upsample,
    )
    rows = db.execute(
        select(*columns, count)
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.DONE)
        .group_by(*columns)
        .order_by(count.desc())
    )
    return tuple(RunShape(*row[:5], count=int(row[5])) for row in rows)


@database_errors()
def collection_report(db: Session, name: str) -> CollectionReport:
    """Gather what a collection's report shows, except its images (see :func:`report_rows`).

    Args:
        db: The caller's session.
        name: The collection's name.

    Returns:
        Its settings and aggregates.

    Raises:
        CollectionNotFound: If no collection has that name.
        DatabaseUnavailable: If the database cannot be reached.
    """
    collection = get_collection(db, name)
    cid = collection.id
    counts = {status.value: 0 for status in ImageStatus}
    for status, n in db.execute(
        select(Image.status, func.count()).where(Image.collection_id == cid).group_by(Image.status)
    ):
        counts[ImageStatus(status).value] = int(n)
    first_started, last_finished = db.execute(
        select(func.min(Image.started_at), func.max(Image.finished_at)).where(
            Image.collection_id == cid
        )
    ).one()
    busy = db.scalar(
        select(func.sum(Image.duration_s)).where(
            Image.collection_id == cid, Image.status == ImageStatus.DONE
        )
    )
    failures, other = _failure_groups(db, cid)
    settings = {column: getattr(collection, column) for column in SETTINGS_COLUMNS}
    settings["status"] = collection.status.value
    return CollectionReport(
        id=cid,
        name=collection.name,
        settings=settings,
        untrained=collection.untrained,
        counts=counts,
        total=sum(counts.values()),
        first_started=first_started,
        last_finished=last_finished,
        finished=counts[ImageStatus.DONE.value] + counts[ImageStatus.FAILED.value],
        busy_seconds=float(busy) if busy is not None else None,
        as_run=_as_run(db, cid),
        failures=tuple(failures),
        other_failures=other,
    )


@database_errors()
def report_rows(
    db: Session, collection_id: int, *, after_id: int = 0, limit: int = 5_000
) -> list[ReportRow]:
    """Return one page of a collection's images for the contact sheet, by id.

    Args:
        db: The caller's session.
        collection_id: The collection.
        after_id: Return images with a larger id (0 for the first page).
        limit: Most images returned.

    Returns:
        Up to ``limit`` rows, ascending id; empty past the last image.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    rows = db.execute(
        select(
            Image.id,
            Image.relative_path,
            Image.status,
            Image.failure_code,
            Image.output_uri,
            Image.source_thumb_uri,
            Image.output_thumb_uri,
        )
        .where(Image.collection_id == collection_id, Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )
    return [
        ReportRow(i, path, ImageStatus(status).value, code, output, source_thumb, output_thumb)
        for i, path, status, code, output, source_thumb, output_thumb in rows
    ]
