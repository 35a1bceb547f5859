"""Dispatch: pending images are queued in scan order, never twice, and can go back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from catalog_rows import read_image, scanned
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import Image, ImageStatus
from catalog.queries import count_in_flight
from catalog.registration import register_images
from catalog.submission import create_or_get_collection
from catalog.transitions import queue_pending, unqueue, unqueue_stale


def _statuses(sessions: sessionmaker[Session], ids: list[int]) -> list[str]:
    with sessions.begin() as db:
        rows = db.execute(select(Image.id, Image.status).where(Image.id.in_(ids)))
        by_id = {image_id: status.value for image_id, status in rows}
    return [by_id[image_id] for image_id in ids]


def test_queue_pending_queues_the_oldest_pending_images_up_to_the_limit(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        queued = queue_pending(db, collection_id, 3)

    assert queued == image_ids[:3]
    assert _statuses(sessions, image_ids) == ["queued"] * 3 + ["pending"] * 2
    assert read_image(sessions, image_ids[0]).queued_at is not None
    assert read_image(sessions, image_ids[4]).queued_at is None


def test_queue_pending_skips_images_that_are_not_pending(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids[:2], ImageStatus.DONE)
    force_status(image_ids[2], ImageStatus.RUNNING)

    with sessions.begin() as db:
        queued = queue_pending(db, collection_id, 10)

    assert queued == image_ids[3:]


def test_queue_pending_with_no_room_queues_nothing(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        assert queue_pending(db, collection_id, 0) == []
    assert set(_statuses(sessions, image_ids)) == {"pending"}


def test_queue_pending_touches_only_its_collection(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        other, _ = create_or_get_collection(db, "other", "in", "out")
        register_images(db, other.id, scanned(2, prefix="other"))
    with sessions.begin() as db:
        queued = queue_pending(db, other.id, 10)

    assert len(queued) == 2
    assert set(_statuses(sessions, image_ids)) == {"pending"}


def test_queueing_again_after_everything_is_queued_returns_nothing(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        first = queue_pending(db, collection_id, 10)
    with sessions.begin() as db:
        second = queue_pending(db, collection_id, 10)

    assert (first, second) == (image_ids, [])


def test_concurrent_dispatchers_on_postgresql_queue_disjoint_images_without_waiting(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int], is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("SQLite has one writer at a time: a second dispatcher waits instead")
    with sessions() as first, sessions() as second:
        # The first transaction holds row locks on its images until it commits; the
        # second skips them instead of blocking (if it blocked, this test would hang).
        from_first = queue_pending(first, collection_id, 3)
        from_second = queue_pending(second, collection_id, 3)
        first.commit()
        second.commit()

    assert from_first == image_ids[:3]
    assert from_second == image_ids[3:]


def test_unqueue_returns_queued_images_to_pending(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    with sessions.begin() as db:
        queue_pending(db, collection_id, 5)
    force_status(image_ids[0], ImageStatus.RUNNING)

    with sessions.begin() as db:
        back = unqueue(db, image_ids[:3])

    assert back == 2
    assert _statuses(sessions, image_ids) == ["running", "pending", "pending", "queued", "queued"]
    assert read_image(sessions, image_ids[1]).queued_at is None


def test_unqueue_of_nothing_does_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        assert unqueue(db, []) == 0


def test_unqueue_stale_returns_only_images_queued_before_the_cutoff(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    force_status(image_ids[:2], ImageStatus.QUEUED, queued_at=long_ago)
    force_status(image_ids[2:4], ImageStatus.QUEUED, queued_at=datetime.now(UTC))

    with sessions.begin() as db:
        back = unqueue_stale(db, queued_before=datetime.now(UTC) - timedelta(hours=1))

    assert back == 2
    assert _statuses(sessions, image_ids) == ["pending", "pending", "queued", "queued", "pending"]


def test_count_in_flight_counts_queued_images_per_collection_and_overall(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        other, _ = create_or_get_collection(db, "other", "in", "out")
        register_images(db, other.id, scanned(4, prefix="other"))
        queue_pending(db, collection_id, 2)
        queue_pending(db, other.id, 3)

    with sessions.begin() as db:
        counts = (
            count_in_flight(db, collection_id),
            count_in_flight(db, other.id),
            count_in_flight(db),
        )

    assert counts == (2, 3, 5)
