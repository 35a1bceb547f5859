"""Tests of scheduler.dispatching against a real catalog and a real Redis broker."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from scheduler_testing import (
    decode_message,
    ids_by_path,
    pop_next,
    queue_length,
    queued_messages,
    status_counts,
    statuses,
)
from scheduler_testing import (
    pending_collection as _collection,
)
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from catalog import (
    Collection,
    CollectionStatus,
    Image,
    ImageStatus,
    claim_image,
    count_in_flight,
    get_collection,
    make_sessionmaker,
    retry_images,
)
from scheduler import BrokerUnavailable, TaskRequest, celery_sender, dispatch
from workers.app import create_app
from workers.names import COLORIZE

BERLIN = ZoneInfo("Europe/Berlin")


def _ids(sessions: sessionmaker[Session], name: str) -> list[int]:
    return [image_id for _path, image_id in sorted(ids_by_path(sessions, name).items())]


def _pop_and_claim(redis_url: str, sessions: sessionmaker[Session], count: int) -> list[int]:
    """Do what workers do with the oldest ``count`` messages: take them, claim the images."""
    client = redis.Redis.from_url(redis_url)
    try:
        taken = [pop_next(client) for _ in range(count)]
    finally:
        client.close()
    claimed = []
    for raw in taken:
        assert raw is not None
        image_id = decode_message(raw).image_id
        with sessions.begin() as db:
            assert claim_image(db, image_id, worker="test-worker") is not None
        claimed.append(image_id)
    return claimed


def test_dispatch_sends_one_task_per_pending_image_and_marks_it_queued(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    ids = _collection(sessions, "1920s", 7)

    report = dispatch(sessions, celery_sender(celery_app), max_in_flight=100)

    assert report.sent == 7
    assert report.in_flight == 7
    messages = queued_messages(redis_url)
    assert [message.image_id for message in messages] == ids
    assert {message.task for message in messages} == {COLORIZE}
    assert messages[0].argsrepr == f"({ids[0]}, collection='1920s', source='p0000.tif')"
    assert set(statuses(sessions).values()) == {"queued"}


def test_dispatch_keeps_at_most_max_in_flight_messages_in_the_broker(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    ids = _collection(sessions, "1920s", 12)
    send = celery_sender(celery_app)

    first = dispatch(sessions, send, max_in_flight=5, batch_size=2)
    second = dispatch(sessions, send, max_in_flight=5, batch_size=2)

    assert (first.sent, second.sent) == (5, 0)
    assert first.full and second.full
    assert queue_length(redis_url) == 5
    assert [message.image_id for message in queued_messages(redis_url)] == ids[:5]
    assert Counter(statuses(sessions).values()) == {"queued": 5, "pending": 7}


def test_dispatch_tops_up_after_images_leave_queued(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    ids = _collection(sessions, "1920s", 12)
    send = celery_sender(celery_app)
    dispatch(sessions, send, max_in_flight=5)

    claimed = _pop_and_claim(redis_url, sessions, 3)
    assert claimed == ids[:3]
    assert queue_length(redis_url) == 2

    report = dispatch(sessions, send, max_in_flight=5)

    assert report.sent == 3
    assert queue_length(redis_url) == 5
    assert [message.image_id for message in queued_messages(redis_url)] == ids[3:8]
    assert Counter(statuses(sessions).values()) == {"running": 3, "queued": 5, "pending": 4}


def _set_submitted_at(sessions: sessionmaker[Session], name: str, moment: datetime) -> None:
    with sessions.begin() as db:
        db.execute(update(Collection).where(Collection.name == name).values(updated_at=moment))


def test_dispatch_holds_a_collection_until_its_window_opens(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    _collection(sessions, "night", 4, not_before="22:00")
    _set_submitted_at(sessions, "night", datetime(2024, 6, 3, 9, 30, tzinfo=BERLIN))
    send = celery_sender(celery_app)

    evening = datetime(2024, 6, 3, 21, 59, tzinfo=BERLIN)
    held = dispatch(sessions, send, max_in_flight=100, now=evening, tz=BERLIN)

    assert held.sent == 0
    assert held.held_for(held.collections[0].collection_id) == datetime(
        2024, 6, 3, 22, 0, tzinfo=BERLIN
    )
    assert queue_length(redis_url) == 0
    assert set(statuses(sessions).values()) == {"pending"}

    after_midnight = datetime(2024, 6, 4, 0, 15, tzinfo=BERLIN)
    released = dispatch(sessions, send, max_in_flight=100, now=after_midnight, tz=BERLIN)

    assert released.sent == 4
    assert not released.collections[0].held
    assert queue_length(redis_url) == 4


def test_dispatch_serves_higher_priority_first_then_older_collections(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    old_low = _collection(sessions, "old-low", 3, priority=0)
    new_low = _collection(sessions, "new-low", 3, priority=0)
    high = _collection(sessions, "high", 3, priority=5)

    report = dispatch(sessions, celery_sender(celery_app), max_in_flight=7)

    assert [item.name for item in report.collections] == ["high", "old-low", "new-low"]
    assert [item.sent for item in report.collections] == [3, 3, 1]
    sent = [message.image_id for message in queued_messages(redis_url)]
    assert sent == high + old_low + new_low[:1]


def test_dispatch_returns_unsent_images_to_pending_when_sending_fails(
    sessions: sessionmaker[Session],
) -> None:
    ids = _collection(sessions, "1920s", 5)
    delivered: list[int] = []

    def send(requests: Sequence[TaskRequest]) -> None:
        delivered.extend(request.image_id for request in requests[:2])
        raise BrokerUnavailable("connection reset", sent=2)

    with pytest.raises(BrokerUnavailable, match="3 images of collection '1920s'"):
        dispatch(sessions, send, max_in_flight=100)

    assert delivered == ids[:2]
    status_of = statuses(sessions)
    assert [status_of[f"p{index:04d}.tif"] for index in range(5)] == ["queued"] * 2 + [
        "pending"
    ] * 3


def test_dispatch_returns_the_batch_queued_meanwhile_to_pending_when_a_send_fails(
    sessions: sessionmaker[Session],
) -> None:
    ids = _collection(sessions, "1920s", 6)
    batches: list[list[int]] = []

    def send(requests: Sequence[TaskRequest]) -> None:
        batches.append([request.image_id for request in requests])
        if len(batches) == 2:
            raise BrokerUnavailable("connection reset", sent=1)

    with pytest.raises(BrokerUnavailable, match="3 images of collection '1920s'"):
        dispatch(sessions, send, max_in_flight=100, batch_size=2)

    # The third batch was queued while the second was being sent, and never sent.
    assert batches == [ids[0:2], ids[2:4]]
    status_of = statuses(sessions)
    assert [status_of[f"p{index:04d}.tif"] for index in range(6)] == ["queued"] * 3 + [
        "pending"
    ] * 3


def test_dispatch_returns_every_unsent_image_to_pending_when_sending_raises_a_bug(
    sessions: sessionmaker[Session],
) -> None:
    _collection(sessions, "1920s", 5)

    def send(requests: Sequence[TaskRequest]) -> None:
        raise RuntimeError("a bug in the sender")

    with pytest.raises(RuntimeError, match="a bug in the sender"):
        dispatch(sessions, send, max_in_flight=100, batch_size=2)

    assert set(statuses(sessions).values()) == {"pending"}
    with sessions.begin() as db:
        assert count_in_flight(db) == 0


def test_dispatch_returns_every_image_to_pending_when_the_broker_is_unreachable(
    sessions: sessionmaker[Session],
) -> None:
    _collection(sessions, "1920s", 4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(
        broker_url=f"redis://127.0.0.1:{port}/0",
        task_publish_retry=False,
        broker_transport_options={"max_retries": 0},
    )

    with pytest.raises(BrokerUnavailable):
        dispatch(sessions, celery_sender(app), max_in_flight=100)

    assert set(statuses(sessions).values()) == {"pending"}
    with sessions.begin() as db:
        assert count_in_flight(db) == 0


def test_dispatch_refuses_a_limit_below_one(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        dispatch(sessions, lambda requests: None, max_in_flight=0)


def test_two_dispatchers_at_once_never_send_one_image_twice_nor_exceed_the_limit(
    postgres_catalog_url: str, redis_url: str
) -> None:
    setup = make_sessionmaker(postgres_catalog_url)
    ids = _collection(setup, "a", 300) + _collection(setup, "b", 300)
    setup.kw["bind"].dispose()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        own = make_sessionmaker(postgres_catalog_url)
        app = create_app(broker_url=redis_url)
        send = celery_sender(app)
        try:
            start.wait()
            for _ in range(3):
                dispatch(own, send, max_in_flight=450, batch_size=25)
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
        finally:
            own.kw["bind"].dispose()
            app.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    sent = [message.image_id for message in queued_messages(redis_url)]
    assert len(sent) == 450
    assert len(set(sent)) == 450, "an image was sent twice"
    assert set(sent) <= set(ids)
    check = make_sessionmaker(postgres_catalog_url)
    try:
        with check.begin() as db:
            assert count_in_flight(db) == 450
        assert status_counts(check) == {"queued": 450, "pending": 150}
    finally:
        check.kw["bind"].dispose()


def test_dispatch_marks_a_finished_collection_done_and_a_retry_reopens_it(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    ids = _collection(sessions, "1920s", 3)
    _collection(sessions, "1930s", 1)
    send = celery_sender(celery_app)
    dispatch(sessions, send, max_in_flight=100)
    for image_id, status in zip(
        ids, (ImageStatus.DONE, ImageStatus.FAILED, ImageStatus.SKIPPED), strict=True
    ):
        with sessions.begin() as db:
            db.execute(update(Image).where(Image.id == image_id).values(status=status))

    report = dispatch(sessions, send, max_in_flight=100)

    assert report.sent == 0
    with sessions.begin() as db:
        # 1930s still has an image queued: not done.
        assert get_collection(db, "1930s").status is CollectionStatus.ACTIVE
        assert get_collection(db, "1920s").status is CollectionStatus.DONE
        assert retry_images(db, "1920s", statuses=[ImageStatus.FAILED]) == 1
        assert get_collection(db, "1920s").status is CollectionStatus.ACTIVE
    assert dispatch(sessions, send, max_in_flight=100).sent_for(_collection_id(sessions)) == 1


def test_dispatch_feeds_again_a_collection_marked_done_while_its_images_were_registered(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    # A pass completes the collection just before a registration commits its rows (the
    # pass's NOT EXISTS did not see them): it is done with pending images.
    ids = _collection(sessions, "1920s", 3)
    with sessions.begin() as db:
        db.execute(
            update(Collection)
            .where(Collection.id == _collection_id(sessions))
            .values(status=CollectionStatus.DONE)
        )

    report = dispatch(sessions, celery_sender(celery_app), max_in_flight=100)

    assert report.sent_for(_collection_id(sessions)) == len(ids)
    with sessions.begin() as db:
        assert get_collection(db, "1920s").status is CollectionStatus.ACTIVE


def _collection_id(sessions: sessionmaker[Session], name: str = "1920s") -> int:
    with sessions.begin() as db:
        return get_collection(db, name).id
