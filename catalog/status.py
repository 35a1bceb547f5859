"""Progress of collections: counts by status, throughput, ETA and top failure reasons.

Failures are grouped by their stable code (``images.failure_code``, see
``catalog.reasons``), each with what the code means, what to do, and one example image.

``collection_status()`` answers ``panchro status``; its ``to_dict()`` is the stable shape
of ``panchro status --json``::

    {"generated_at": "2024-05-01T06:00:00+00:00", "window_s": 900.0,
     "collections": [{"id": 1, "name": "1920s", "status": "active", ...,
                      "counts": {"pending": 10, "queued": 2, ..., "cancelled": 0},
                      "total": 120, "remaining": 13, "done_in_window": 30,
                      "finished_in_window": 31, "throughput_per_min": 2.07,
                      "eta_s": 377.4,
                      "top_failures": [{"code": "decode.truncated", "count": 1,
                                        "reason": "The file ends before ...",
                                        "action": "Copy or export ...",
                                        "example": {"id": 7, "path": "box1/a.tif",
                                                    "error": "box1/a.tif: cannot ..."}}]}]}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import OPEN_STATUSES, Collection, Image, ImageStatus, utcnow
from catalog.queries import get_collection, list_collections
from catalog.reasons import FailureCode, describe_reason

logger = logging.getLogger(__name__)

#: Span over which throughput is measured, ending now.
THROUGHPUT_WINDOW = timedelta(minutes=15)
#: Most failure codes reported per collection.
TOP_FAILURES = 5
#: Shortest span throughput is divided by, in seconds (guards a division by zero).
MIN_SPAN_S = 1.0
#: Error shown for an example image that carries no error text.
NO_REASON = "(no reason recorded)"
#: Statuses of images that left the queue for good; they make up the throughput.
FINISHED_STATUSES: tuple[ImageStatus, ...] = (
    ImageStatus.DONE,
    ImageStatus.FAILED,
    ImageStatus.SKIPPED,
)


@dataclass(frozen=True)
class FailureExample:
    """One image that failed with a code, to look at.

    Attributes:
        id: The image's id.
        path: Its path below the collection's source.
        error: Its ``last_error``.
    """

    id: int
    path: str
    error: str


@dataclass(frozen=True)
class FailureReason:
    """One failure code and how many images of a collection failed with it.

    Attributes:
        code: The stable code (``decode.truncated``...); images without one count as
            ``unknown``.
        count: Failed images with that code.
        reason: What the code means.
        action: What to do about it.
        example: The first such image.
    """

    code: str
    count: int
    reason: str
    action: str
    example: FailureExample


@dataclass(frozen=True)
class CollectionProgress:
    """Where one collection stands.

    Attributes:
        id: The collection's id.
        name: Its name.
        status: Its status value ("active", "cancelled", "done").
        priority: Its dispatch priority.
        not_before: Its daily local start time "HH:MM", if any.
        untrained: Whether it runs with random weights (a demonstration).
        source: Its source location.
        output: Its output location.
        created_at: When it was first submitted (UTC).
        counts: Images per status value; every status is present, zeros included.
        total: All its images.
        remaining: Images still to process (pending, queued, running).
        done_in_window: Images done within the throughput window.
        finished_in_window: Images done, failed or skipped within the window.
        throughput_per_min: Finished images per minute over the window (or over the
            part of it since the first of them started); None if none finished.
        eta_s: Seconds until ``remaining`` reaches zero at that throughput; 0 when
            nothing remains; None when there is no throughput to go by.
        top_failures: The most common failure reasons, most frequent first.
    """

    id: int
    name: str
    status: str
    priority: int
    not_before: str | None
    untrained: bool
    source: str
    output: str
    created_at: datetime
    counts: dict[str, int]
    total: int
    remaining: int
    done_in_window: int
    finished_in_window: int
    throughput_per_min: float | None
    eta_s: float | None
    top_failures: tuple[FailureReason, ...]


@dataclass(frozen=True)
class StatusReport:
    """Progress of one or all collections at one moment."""

    generated_at: datetime
    window_s: float
    collections: tuple[CollectionProgress, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data, times as ISO 8601 strings.

        Returns:
            The stable shape of ``panchro status --json`` (see the module docstring).
        """

        def convert(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {key: convert(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [convert(item) for item in value]
            return value

        data: dict[str, Any] = convert(asdict(self))
        return data


def _counts(db: Session, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    counts = {cid: {status.value: 0 for status in ImageStatus} for cid in ids}
    rows = db.execute(
        select(Image.collection_id, Image.status, func.count())
        .where(Image.collection_id.in_(ids))
        .group_by(Image.collection_id, Image.status)
    )
    for collection_id, status, count in rows:
        counts[collection_id][ImageStatus(status).value] = int(count)
    return counts


def _window(
    db: Session, ids: Sequence[int], since: datetime
) -> dict[int, tuple[int, int, datetime | None]]:
    done = func.sum(case((Image.status == ImageStatus.DONE, 1), else_=0))
    rows = db.execute(
        select(Image.collection_id, func.count(), done, func.min(Image.started_at))
        .where(
            Image.collection_id.in_(ids),
            Image.finished_at >= since,
            Image.status.in_(FINISHED_STATUSES),
        )
        .group_by(Image.collection_id)
    )
    return {cid: (int(finished), int(done or 0), first) for cid, finished, done, first in rows}


def _top_failures(db: Session, collection_id: int, limit: int) -> tuple[FailureReason, ...]:
    rows = db.execute(
        select(Image.failure_code, func.count(), func.min(Image.id))
        .where(Image.collection_id == collection_id, Image.status == ImageStatus.FAILED)
        .group_by(Image.failure_code)
    )
    # Failed images without a code count as unknown: merged here, so that the query
    # groups by the indexed column itself (ix_images_collection_id_failure_code).
    groups: dict[str, tuple[int, int]] = {}
    for code, n, first in rows:
        key = code or FailureCode.UNKNOWN.value
        count, example = groups.get(key, (0, first))
        groups[key] = (count + int(n), min(example, first))
    top = sorted(groups.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    if not top:
        return ()
    examples = {
        image_id: (path, error)
        for image_id, path, error in db.execute(
            select(Image.id, Image.relative_path, Image.last_error).where(
                Image.id.in_([example for _, (_, example) in top])
            )
        )
    }
    failures = []
    for code, (count, example) in top:
        path, error = examples[example]
        meaning = describe_reason(code)
        failures.append(
            FailureReason(
                code=code,
                count=count,
                reason=meaning.meaning,
                action=meaning.action,
                example=FailureExample(example, path, error or NO_REASON),
            )
        )
    return tuple(failures)


def _progress(
    collection: Collection,
    counts: dict[str, int],
    window: tuple[int, int, datetime | None],
    failures: tuple[FailureReason, ...],
    *,
    now: datetime,
    span: timedelta,
) -> CollectionProgress:
    finished, done, first_started = window
    remaining = sum(counts[status.value] for status in OPEN_STATUSES)
    throughput: float | None = None
    if finished:
        # A run younger than the window would look slower than it is if divided by
        # the whole window; measure from the start of its oldest finished try.
        effective = span if first_started is None else min(span, now - first_started)
        throughput = finished / max(effective.total_seconds(), MIN_SPAN_S) * 60.0
    if remaining == 0:
        eta: float | None = 0.0
    elif throughput:
        eta = remaining / throughput * 60.0
    else:
        eta = None
    return CollectionProgress(
        id=collection.id,
        name=collection.name,
        status=collection.status.value,
        priority=collection.priority,
        not_before=collection.not_before,
        untrained=collection.untrained,
        source=collection.source,
        output=collection.output,
        created_at=collection.created_at,
        counts=counts,
        total=sum(counts.values()),
        remaining=remaining,
        done_in_window=done,
        finished_in_window=finished,
        throughput_per_min=throughput,
        eta_s=eta,
        top_failures=failures,
    )


@database_errors()
def collection_status(
    db: Session,
    name: str | None = None,
    *,
    window: timedelta = THROUGHPUT_WINDOW,
    top_failures: int = TOP_FAILURES,
    now: datetime | None = None,
) -> StatusReport:
    """Report the progress of one collection, or of all of them in dispatch order.

    Args:
        db: The caller's session.
        name: The collection's name; None reports every collection.
        window: Span, ending at ``now``, over which throughput is measured.
        top_failures: Most failure reasons reported per collection.
        now: The moment of the report (aware); None means the current time.

    Returns:
        The report.

    Raises:
        CollectionNotFound: If ``name`` is given and no collection has it.
        DatabaseUnavailable: If the database cannot be reached.
    """
    now = now or utcnow()
    collections = [get_collection(db, name)] if name is not None else list_collections(db)
    ids = [collection.id for collection in collections]
    counts = _counts(db, ids) if ids else {}
    windows = _window(db, ids, now - window) if ids else {}
    progress = tuple(
        _progress(
            collection,
            counts[collection.id],
            windows.get(collection.id, (0, 0, None)),
            _top_failures(db, collection.id, top_failures),
            now=now,
            span=window,
        )
        for collection in collections
    )
    return StatusReport(generated_at=now, window_s=window.total_seconds(), collections=progress)
