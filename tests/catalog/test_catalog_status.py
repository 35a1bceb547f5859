"""Progress reports: counts, throughput, ETA and failure reasons in a stable shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from catalog_rows import scanned
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.errors import CollectionNotFound
from catalog.models import Image, ImageStatus
from catalog.reasons import REASONS, FailureCode
from catalog.registration import register_images
from catalog.status import FailureExample, FailureReason, collection_status
from catalog.submission import create_or_get_collection

NOW = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def twenty(sessions: sessionmaker[Session], collection_id: int) -> list[int]:
    """Ids of twenty pending images of the "scans" collection."""
    with sessions.begin() as db:
        register_images(db, collection_id, scanned(20))
        return list(db.scalars(select(Image.id).order_by(Image.id)))


def _finish(
    force: Callable[..., None],
    ids: list[int],
    status: ImageStatus,
    *,
    started: datetime,
    finished: datetime,
    error: str | None = None,
) -> None:
    force(ids, status, started_at=started, finished_at=finished, last_error=error)


def test_counts_include_every_status_and_the_totals(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    force_status(twenty[:3], ImageStatus.DONE)
    force_status(twenty[3:5], ImageStatus.QUEUED)
    force_status(twenty[5], ImageStatus.RUNNING)

    with sessions.begin() as db:
        (progress,) = collection_status(db, "scans", now=NOW).collections

    assert progress.counts == {
        "pending": 14,
        "queued": 2,
        "running": 1,
        "done": 3,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
    }
    assert (progress.total, progress.remaining) == (20, 17)


def test_throughput_and_eta_come_from_images_finished_within_the_window(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    # Ten images finished in the last ten minutes of a run that started long ago, one
    # more finished before the window; ten remain.
    _finish(
        force_status,
        twenty[:8],
        ImageStatus.DONE,
        started=NOW - timedelta(hours=1),
        finished=NOW - timedelta(minutes=5),
    )
    _finish(
        force_status,
        twenty[8:10],
        ImageStatus.FAILED,
        started=NOW - timedelta(hours=1),
        finished=NOW - timedelta(minutes=1),
        error="bad",
    )
    _finish(
        force_status,
        [twenty[10]],
        ImageStatus.DONE,
        started=NOW - timedelta(hours=2),
        finished=NOW - timedelta(minutes=11),
    )

    with sessions.begin() as db:
        report = collection_status(db, "scans", window=timedelta(minutes=10), now=NOW)
    (progress,) = report.collections

    assert (progress.done_in_window, progress.finished_in_window) == (8, 10)
    assert progress.throughput_per_min == pytest.approx(1.0)
    assert progress.remaining == 9
    assert progress.eta_s == pytest.approx(9 * 60.0)
    assert report.window_s == 600.0


def test_a_run_younger_than_the_window_is_measured_from_its_first_start(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    _finish(
        force_status,
        twenty[:4],
        ImageStatus.DONE,
        started=NOW - timedelta(minutes=2),
        finished=NOW - timedelta(minutes=1),
    )

    with sessions.begin() as db:
        (progress,) = collection_status(db, "scans", now=NOW).collections

    assert progress.throughput_per_min == pytest.approx(2.0)
    assert progress.eta_s == pytest.approx(16 / 2.0 * 60.0)


def test_eta_is_zero_when_nothing_remains_and_unknown_without_throughput(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    with sessions.begin() as db:
        (waiting,) = collection_status(db, "scans", now=NOW).collections
    _finish(
        force_status,
        twenty,
        ImageStatus.DONE,
        started=NOW - timedelta(days=2),
        finished=NOW - timedelta(days=1),
    )
    with sessions.begin() as db:
        (finished,) = collection_status(db, "scans", now=NOW).collections

    assert (waiting.throughput_per_min, waiting.eta_s) == (None, None)
    assert (finished.throughput_per_min, finished.eta_s) == (None, 0.0)


def test_top_failures_group_by_code_whatever_the_file_most_frequent_first(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    # Each error names its own file; the code is what they share.
    for n, image_id in enumerate(twenty[:8]):
        code = "decode.truncated" if n < 3 else "oom.floor"
        force_status(image_id, ImageStatus.FAILED, last_error=f"{n}.tif: {code}", failure_code=code)
    force_status(twenty[8], ImageStatus.FAILED, last_error=None, failure_code=None)
    force_status(twenty[9], ImageStatus.FAILED, last_error="boom", failure_code="unknown")
    force_status(twenty[10], ImageStatus.SKIPPED, last_error="text", failure_code="skip.not_image")

    with sessions.begin() as db:
        (progress,) = collection_status(db, "scans", top_failures=3, now=NOW).collections

    oom, truncated, unknown = (
        REASONS[FailureCode(c)] for c in ("oom.floor", "decode.truncated", "unknown")
    )
    assert progress.top_failures == (
        FailureReason(
            "oom.floor",
            5,
            oom.meaning,
            oom.action,
            FailureExample(twenty[3], "img/000003.tif", "3.tif: oom.floor"),
        ),
        FailureReason(
            "decode.truncated",
            3,
            truncated.meaning,
            truncated.action,
            FailureExample(twenty[0], "img/000000.tif", "0.tif: decode.truncated"),
        ),
        # No code counts as unknown; the example is the first of them.
        FailureReason(
            "unknown",
            2,
            unknown.meaning,
            unknown.action,
            FailureExample(twenty[8], "img/000008.tif", "(no reason recorded)"),
        ),
    )


def test_status_of_all_collections_lists_them_in_dispatch_order(
    sessions: sessionmaker[Session], twenty: list[int]
) -> None:
    with sessions.begin() as db:
        urgent, _ = create_or_get_collection(db, "urgent", "in", "out", priority=9)
        register_images(db, urgent.id, scanned(2, prefix="u"))
        create_or_get_collection(db, "empty", "in", "out2", priority=-1)

    with sessions.begin() as db:
        report = collection_status(db, now=NOW)

    assert [(p.name, p.total) for p in report.collections] == [
        ("urgent", 2),
        ("scans", 20),
        ("empty", 0),
    ]
    assert report.collections[2].eta_s == 0.0


def test_status_of_an_unknown_collection_raises(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(CollectionNotFound), sessions.begin() as db:
        collection_status(db, "nope")


def test_status_to_dict_is_json_with_a_stable_shape(
    sessions: sessionmaker[Session], twenty: list[int], force_status: Callable[..., None]
) -> None:
    force_status(twenty[0], ImageStatus.FAILED, last_error="bad", failure_code="oom.floor")
    with sessions.begin() as db:
        data = json.loads(json.dumps(collection_status(db, "scans", now=NOW).to_dict()))

    assert set(data) == {"generated_at", "window_s", "collections"}
    assert data["generated_at"] == "2024-05-01T06:00:00+00:00"
    (collection,) = data["collections"]
    assert set(collection) == {
        "id",
        "name",
        "status",
        "priority",
        "not_before",
        "untrained",
        "source",
        "output",
        "created_at",
        "counts",
        "total",
        "remaining",
        "done_in_window",
        "finished_in_window",
        "throughput_per_min",
        "eta_s",
        "top_failures",
    }
    assert collection["status"] == "active"
    oom = REASONS[FailureCode.OOM_FLOOR]
    assert collection["top_failures"] == [
        {
            "code": "oom.floor",
            "count": 1,
            "reason": oom.meaning,
            "action": oom.action,
            "example": {"id": twenty[0], "path": "img/000000.tif", "error": "bad"},
        }
    ]
    assert datetime.fromisoformat(collection["created_at"]).tzinfo is not None
