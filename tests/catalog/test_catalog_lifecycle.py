"""Collection-wide changes (retry, cancel, resume, complete) and the read queries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from catalog_rows import read_collection, read_image, scanned
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.errors import CollectionNotFound, ImageNotFound
from catalog.models import CollectionStatus, Image, ImageStatus
from catalog.queries import get_collection, get_image, list_collections, list_images
from catalog.registration import ScannedImage, register_images
from catalog.submission import create_or_get_collection
from catalog.transitions import (
    cancel_collection,
    claim_image,
    complete_collection,
    queue_pending,
    resume_collection,
    retry_images,
)


def _statuses(sessions: sessionmaker[Session]) -> list[str]:
    with sessions.begin() as db:
        return [status.value for status in db.scalars(select(Image.status).order_by(Image.id))]


def test_retry_images_sends_failed_images_back_to_pending_with_counters_reset(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(
        image_ids[:2],
        ImageStatus.FAILED,
        last_error="boom",
        failure_code="oom.floor",
        lost_attempts=3,
    )
    force_status(image_ids[2], ImageStatus.DONE)
    force_status(image_ids[3], ImageStatus.SKIPPED)

    with sessions.begin() as db:
        retried = retry_images(db, "scans", statuses=[ImageStatus.FAILED])

    assert retried == 2
    assert _statuses(sessions) == ["pending", "pending", "done", "skipped", "pending"]
    image = read_image(sessions, image_ids[0])
    assert (image.last_error, image.lost_attempts, image.finished_at) == (None, 0, None)
    assert image.failure_code is None


def test_retry_images_can_retry_skipped_and_cancelled_too(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids[0], ImageStatus.SKIPPED)
    force_status(image_ids[1], ImageStatus.CANCELLED)
    force_status(image_ids[2], ImageStatus.FAILED)

    with sessions.begin() as db:
        retried = retry_images(
            db, collection_id, statuses=[ImageStatus.SKIPPED, ImageStatus.CANCELLED]
        )

    assert retried == 2
    assert _statuses(sessions)[:3] == ["pending", "pending", "failed"]


@pytest.mark.parametrize("status", [ImageStatus.DONE, ImageStatus.RUNNING, ImageStatus.QUEUED])
def test_retry_images_refuses_statuses_that_are_not_finished_failures(
    sessions: sessionmaker[Session], collection_id: int, status: ImageStatus
) -> None:
    with pytest.raises(ValueError, match=status.value), sessions.begin() as db:
        retry_images(db, collection_id, statuses=[status])


def test_retrying_a_finished_collection_makes_it_active_again(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids, ImageStatus.FAILED)
    with sessions.begin() as db:
        assert complete_collection(db, collection_id)
    with sessions.begin() as db:
        retry_images(db, collection_id, statuses=[ImageStatus.FAILED])

    assert read_collection(sessions, collection_id).status is CollectionStatus.ACTIVE


def test_cancel_collection_cancels_waiting_images_and_leaves_running_ones(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    with sessions.begin() as db:
        queue_pending(db, collection_id, 2)
    force_status(image_ids[2], ImageStatus.RUNNING)
    force_status(image_ids[3], ImageStatus.DONE)

    with sessions.begin() as db:
        cancelled = cancel_collection(db, "scans")

    assert cancelled == 3
    assert _statuses(sessions) == ["cancelled", "cancelled", "running", "done", "cancelled"]
    assert read_collection(sessions, collection_id).status is CollectionStatus.CANCELLED


def test_a_message_for_a_cancelled_image_claims_nothing(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        queue_pending(db, collection_id, 1)
        cancel_collection(db, collection_id)
    with sessions.begin() as db:
        assert claim_image(db, image_ids[0], worker="w") is None


def test_resume_collection_sends_cancelled_images_back_to_pending(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        cancel_collection(db, collection_id)
    with sessions.begin() as db:
        resumed = resume_collection(db, collection_id)

    assert resumed == 5
    assert set(_statuses(sessions)) == {"pending"}
    assert read_collection(sessions, collection_id).status is CollectionStatus.ACTIVE


def _retry_failed(db: Session, collection: str) -> int:
    return retry_images(db, collection, statuses=[ImageStatus.FAILED])


@pytest.mark.parametrize("call", [cancel_collection, resume_collection, _retry_failed])
def test_collection_wide_changes_refuse_an_unknown_collection(
    sessions: sessionmaker[Session], call: Callable[[Session, str], int]
) -> None:
    with pytest.raises(CollectionNotFound), sessions.begin() as db:
        call(db, "nope")


def test_complete_collection_waits_until_no_image_needs_work(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids[:4], ImageStatus.DONE)
    force_status(image_ids[4], ImageStatus.RUNNING)
    with sessions.begin() as db:
        early = complete_collection(db, collection_id)
    force_status(image_ids[4], ImageStatus.FAILED)
    with sessions.begin() as db:
        finished = complete_collection(db, collection_id)

    assert (early, finished) == (False, True)
    assert read_collection(sessions, collection_id).status is CollectionStatus.DONE


def test_a_changed_source_reopens_a_completed_collection(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids, ImageStatus.DONE)
    with sessions.begin() as db:
        complete_collection(db, collection_id)
    rows = scanned(5)
    rows[2] = ScannedImage(**{**rows[2].__dict__, "checksum": "edited"})
    with sessions.begin() as db:
        register_images(db, collection_id, rows)

    assert read_collection(sessions, collection_id).status is CollectionStatus.ACTIVE
    assert _statuses(sessions) == ["done", "done", "pending", "done", "done"]


# --------------------------------------------------------------------------- queries


def test_get_collection_finds_by_id_and_by_name(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        assert get_collection(db, collection_id).name == "scans"
        assert get_collection(db, "scans").id == collection_id
        with pytest.raises(CollectionNotFound, match="nope"):
            get_collection(db, "nope")
        with pytest.raises(CollectionNotFound):
            get_collection(db, collection_id + 100)


def test_get_image_raises_for_an_unknown_id(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ImageNotFound), sessions.begin() as db:
        get_image(db, 777)


def test_list_collections_orders_by_priority_then_age(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        for name, priority in [("low", 0), ("high", 10), ("also-low", 0), ("mid", 5)]:
            create_or_get_collection(db, name, "in", f"out-{name}", priority=priority)
        cancel_collection(db, "also-low")

    with sessions.begin() as db:
        everything = [c.name for c in list_collections(db)]
        active = [c.name for c in list_collections(db, statuses=[CollectionStatus.ACTIVE])]

    assert everything == ["high", "mid", "low", "also-low"]
    assert active == ["high", "mid", "low"]


def test_list_images_filters_by_status_and_pages_in_scan_order(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status([image_ids[1], image_ids[3], image_ids[4]], ImageStatus.FAILED)

    with sessions.begin() as db:
        failed = [image.id for image in list_images(db, "scans", status=ImageStatus.FAILED)]
        page = [image.id for image in list_images(db, collection_id, limit=2, offset=1)]

    assert failed == [image_ids[1], image_ids[3], image_ids[4]]
    assert page == image_ids[1:3]


def test_list_images_pages_by_id_exactly_while_statuses_change(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    with sessions.begin() as db:
        first = [i.id for i in list_images(db, collection_id, status=ImageStatus.PENDING, limit=2)]
    # An image of the first page leaves "pending" before the next page is read: offset
    # paging would now skip one; keyset paging does not.
    force_status([image_ids[0]], ImageStatus.DONE)
    with sessions.begin() as db:
        second = [
            i.id
            for i in list_images(
                db, collection_id, status=ImageStatus.PENDING, limit=2, after_id=first[-1]
            )
        ]

    assert first + second == image_ids[:4]


def test_listed_images_stay_readable_after_their_transaction(
    sessions: sessionmaker[Session], image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        images = list_images(db, "scans")

    assert [image.relative_path for image in images][:2] == ["img/000000.tif", "img/000001.tif"]
    assert images[0].collection.name == "scans"
