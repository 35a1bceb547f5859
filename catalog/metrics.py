"""Numbers of the catalog for monitoring: counts, durations, out-of-memory steps, lost tries.

:func:`read_metrics` answers one scrape of ``panchro metrics`` with a few GROUP BY
queries, all in the caller's transaction, and returns plain values; turning them into
Prometheus metric families is the command's job, so this package knows nothing of
Prometheus::

    with transaction(sessions) as db:
        numbers = read_metrics(db, window=timedelta(minutes=5))
    numbers.images["1920s"]["done"]           # 118
    numbers.oom_steps[("1920s", 1024)]        # 3 tries ran out of memory at 1024 px
    numbers.failed[("1920s", "oom.floor")]    # 1 image failed out of memory at 256 px

Seconds per image come from the ``done`` images (``duration_s``: start to finish of the
try that produced the output), as cumulative bucket counts the way a Prometheus
histogram reports them, so that no row leaves the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Attempt, AttemptOutcome, Collection, Image, ImageStatus, utcnow
from catalog.reasons import FailureCode

__all__ = [
    "DURATION_BUCKETS_S",
    "DurationHistogram",
    "MetricsSnapshot",
    "RATE_WINDOW",
    "collections_of_images",
    "read_metrics",
]

#: Upper bounds of the seconds-per-image buckets, in seconds: from a small image on a
#: GPU (a fraction of a second) to a large one on a CPU (minutes).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
#: Span, ending now, over which images per second are measured.
RATE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class DurationHistogram:
    """Seconds per done image for one input size, device and precision.

    Attributes:
        input_size: Model input size in pixels; None where the catalog has none.
        device: Device label the worker recorded (``cuda:0 (NVIDIA A100)``), or None.
        precision: ``fp16``, ``bf16`` or ``fp32``, or None.
        bucket_counts: Images that took at most each bound of ``bounds``, cumulative.
        bounds: Upper bounds of the buckets, in seconds, ascending.
        count: Images counted.
        sum_s: Seconds they took together.
    """

    input_size: int | None
    device: str | None
    precision: str | None
    bucket_counts: tuple[int, ...]
    bounds: tuple[float, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class MetricsSnapshot:
    """The catalog's numbers at one moment; every mapping is keyed by collection name.

    Attributes:
        images: Images by status, every status present (zero where none).
        done_in_window: Images that became ``done`` within ``window_s``.
        window_s: Span of ``done_in_window``, in seconds.
        durations: Seconds per done image, by input size, device and precision.
        oom_steps: Tries that ran out of memory, by collection and input size.
        lost_attempts: Tries given up because their worker vanished.
        failed: Failed images by collection and failure code (``unknown`` for those
            without one); only codes that occur.
    """

    images: dict[str, dict[str, int]] = field(default_factory=dict)
    done_in_window: dict[str, int] = field(default_factory=dict)
    window_s: float = RATE_WINDOW.total_seconds()
    durations: tuple[DurationHistogram, ...] = ()
    oom_steps: dict[tuple[str, int], int] = field(default_factory=dict)
    lost_attempts: dict[str, int] = field(default_factory=dict)
    failed: dict[tuple[str, str], int] = field(default_factory=dict)


def _images_by_status(db: Session) -> dict[str, dict[str, int]]:
    names = db.execute(select(Collection.name).order_by(Collection.id)).scalars()
    counts = {name: {status.value: 0 for status in ImageStatus} for name in names}
    rows = db.execute(
        select(Collection.name, Image.status, func.count())
        .join(Image, Image.collection_id == Collection.id)
        .group_by(Collection.name, Image.status)
    )
    for name, status, count in rows:
        counts[name][ImageStatus(status).value] = int(count)
    return counts


def _done_since(db: Session, since: datetime) -> dict[str, int]:
    rows = db.execute(
        select(Collection.name, func.count())
        .join(Image, Image.collection_id == Collection.id)
        .where(Image.status == ImageStatus.DONE, Image.finished_at >= since)
        .group_by(Collection.name)
    )
    return {name: int(count) for name, count in rows}


def _durations(db: Session, bounds: Sequence[float]) -> tuple[DurationHistogram, ...]:
    buckets = [
        func.sum(case((Image.duration_s <= bound, 1), else_=0)).label(f"le{i}")
        for i, bound in enumerate(bounds)
    ]
    keys = (Image.input_size, Image.device, Image.precision)
    rows = db.execute(
        select(*keys, func.count(), func.sum(Image.duration_s), *buckets)
        .where(Image.status == ImageStatus.DONE, Image.duration_s.is_not(None))
        .group_by(*keys)
        .order_by(*keys)
    )
    return tuple(
        DurationHistogram(
            input_size=size,
            device=device,
            precision=precision,
            bucket_counts=tuple(int(n or 0) for n in counts),
            bounds=tuple(bounds),
            count=int(count),
            sum_s=float(total or 0.0),
        )
        for size, device, precision, count, total, *counts in rows
    )


def _failed_tries(outcome: AttemptOutcome, *keys: Any) -> Select[Any]:
    """Count the tries that ended with ``outcome`` by ``keys`` (collection name first)."""
    return (
        select(*keys, func.count())
        .select_from(Attempt)
        .join(Image, Image.id == Attempt.image_id)
        .join(Collection, Collection.id == Image.collection_id)
        .where(Attempt.outcome == outcome)
        .group_by(*keys)
    )


def _oom_steps(db: Session) -> dict[tuple[str, int], int]:
    query = _failed_tries(AttemptOutcome.OOM_RETRY, Collection.name, Attempt.input_size)
    return {(name, int(size)): int(n) for name, size, n in db.execute(query) if size is not None}


def _lost_attempts(db: Session) -> dict[str, int]:
    query = _failed_tries(AttemptOutcome.LOST, Collection.name)
    return {name: int(n) for name, n in db.execute(query)}


def _failed_by_code(db: Session) -> dict[tuple[str, str], int]:
    rows = db.execute(
        select(Collection.name, Image.failure_code, func.count())
        .join(Image, Image.collection_id == Collection.id)
        .where(Image.status == ImageStatus.FAILED)
        .group_by(Collection.name, Image.failure_code)
    )
    failed: dict[tuple[str, str], int] = {}
    for name, code, count in rows:
        key = (name, code or FailureCode.UNKNOWN.value)
        failed[key] = failed.get(key, 0) + int(count)
    return failed


@database_errors()
def read_metrics(
    db: Session,
    *,
    window: timedelta = RATE_WINDOW,
    bounds: Sequence[float] = DURATION_BUCKETS_S,
    now: datetime | None = None,
) -> MetricsSnapshot:
    """Read every number a scrape reports, in the caller's transaction.

    Args:
        db: The caller's session.
        window: Span, ending at ``now``, over which done images are counted for the rate.
        bounds: Upper bounds of the seconds-per-image buckets, ascending.
        now: The moment of the reading (aware); None means the current time.

    Returns:
        The numbers.

    Raises:
        ValueError: If ``bounds`` is not strictly ascending.
        DatabaseUnavailable: If the database cannot be reached.
        SchemaMismatch: If the database has no catalog schema.
    """
    if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
        raise ValueError(f"bucket bounds must ascend strictly: {list(bounds)}")
    now = now or utcnow()
    return MetricsSnapshot(
        images=_images_by_status(db),
        done_in_window=_done_since(db, now - window),
        window_s=window.total_seconds(),
        durations=_durations(db, bounds),
        oom_steps=_oom_steps(db),
        lost_attempts=_lost_attempts(db),
        failed=_failed_by_code(db),
    )


@database_errors()
def collections_of_images(db: Session, image_ids: Iterable[int]) -> dict[int, str]:
    """Return the collection name of each of these images that the catalog holds.

    Args:
        db: The caller's session.
        image_ids: Image ids (the broker's messages name them).

    Returns:
        Collection name by image id; ids the catalog does not hold are left out.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    ids = sorted(set(image_ids))
    if not ids:
        return {}
    rows = db.execute(
        select(Image.id, Collection.name)
        .join(Collection, Collection.id == Image.collection_id)
        .where(Image.id.in_(ids))
    )
    return {int(image_id): str(name) for image_id, name in rows}
