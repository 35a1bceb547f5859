"""A collection of higher priority overtakes what is queued; one max-in-flight for all.

The messages are read back through kombu's own Redis channel (what a worker's transport
runs), so the order checked is the order in which a worker would receive them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from scheduler_testing import pending_collection, queue_length, write_images
from sqlalchemy.orm import Session, sessionmaker

from catalog import claim_image, count_in_flight, transaction
from scheduler import celery_sender, dispatch, shared_max_in_flight, submit
from scheduler.flight import MAX_IN_FLIGHT_KEY, announce_max_in_flight
from scheduler.periodic import dispatcher
from storage import open_storage
from workers.app import create_app
from workers.broker import (
    COLORIZE_QUEUE,
    PRIORITY_STEPS,
    message_priority,
    queue_keys,
    restore_in_front,
)
from workers.redelivery import TRANSPORT


@contextmanager
def _worker_channel(redis_url: str) -> Iterator[Any]:
    """A channel of a worker's transport (front-of-queue requeue), as a worker opens it."""
    app = create_app(broker_url=redis_url, broker_transport=TRANSPORT)
    try:
        with app.connection_for_read() as connection:
            yield connection.default_channel
    finally:
        app.close()


def _receive(channel: Any, *, ack: bool = True) -> tuple[int, str]:
    """Take the next message as a worker would; return its image id and delivery tag."""
    message = channel.basic_get(COLORIZE_QUEUE, no_ack=ack)
    assert message is not None, "no message waiting"
    args = message.decode()[0]
    return int(args[0]), str(message.delivery_tag)


def _claim(sessions: sessionmaker[Session], image_id: int) -> None:
    with transaction(sessions) as db:
        assert claim_image(db, image_id, worker="gpu0@test") is not None


def test_priority_lists_are_kombus_and_higher_collections_come_first(celery_app: Any) -> None:
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        assert tuple(channel.priority_steps) == PRIORITY_STEPS
        kombus = tuple(channel._q_for_pri(COLORIZE_QUEUE, step) for step in PRIORITY_STEPS)
    assert queue_keys(COLORIZE_QUEUE) == kombus
    assert [message_priority(p) for p in (-5, 0, 1, 8, 9, 42)] == [9, 9, 8, 1, 0, 0]


#: The broker's order does not depend on the catalog's database: SQLite is enough.
_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@_SQLITE
def test_a_higher_collection_is_received_next_whatever_is_queued(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    send = celery_sender(celery_app)
    low = pending_collection(sessions, "bulk", 12)
    assert dispatch(sessions, send, max_in_flight=8).sent == 8  # the queue is full
    urgent = pending_collection(sessions, "urgent", 3, priority=9)
    with _worker_channel(redis_url) as channel:
        first, _ = _receive(channel)
        assert first == low[0]
        _claim(sessions, first)  # a worker starts it: one place in flight is free
        report = dispatch(sessions, send, max_in_flight=8)
        assert (report.sent, report.collections[0].name) == (1, "urgent")
        # Behind seven queued images of "bulk", the urgent one is the next one out.
        assert _receive(channel)[0] == urgent[0]
        assert _receive(channel)[0] == low[1]


@_SQLITE
def test_requeued_messages_keep_the_order_across_and_within_priorities(
    sessions: sessionmaker[Session], celery_app: Any, redis_url: str
) -> None:
    send = celery_sender(celery_app)
    low = pending_collection(sessions, "bulk", 4)
    high = pending_collection(sessions, "urgent", 3, priority=5)
    assert dispatch(sessions, send, max_in_flight=100).sent == 7
    with _worker_channel(redis_url) as channel:
        got = [_receive(channel, ack=False) for _ in range(5)]
        assert [image_id for image_id, _ in got] == [*high, low[0], low[1]]
        # A worker process is lost with the second low one (its message is rejected and
        # requeued); the reaper hands back the first low one and the second high one.
        channel.qos.reject(got[4][1], requeue=True)
        restore_in_front(channel.qos, got[3][1])
        restore_in_front(channel.qos, got[1][1])
        order = [_receive(channel)[0] for _ in range(5)]
    # Each went back in front of its own priority, in the order it was first sent.
    assert order == [high[1], *low]


def test_submit_never_queues_more_than_the_schedulers_limit(
    sessions: sessionmaker[Session],
    database_url: str,
    celery_app: Any,
    redis_url: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "scans"
    write_images(source, [f"p{index:02d}.jpg" for index in range(9)])
    pending_collection(sessions, "bulk", 2)
    # A scheduler started with --max-in-flight 5 announces it; this process says 200.
    scheduler_pass = dispatcher(
        celery_app, database_url=database_url, max_in_flight=5, inspect_timeout=0.01
    )
    assert scheduler_pass() == 2
    limit = shared_max_in_flight(celery_app, 200)
    assert limit == 5
    in_flight: list[int] = []

    def send(requests: Any) -> None:
        with transaction(sessions) as db:
            in_flight.append(count_in_flight(db))
        celery_sender(celery_app)(requests)

    summary = submit(
        sessions,
        name="urgent",
        source=source,
        output=tmp_path / "colour",
        storage=open_storage(str(source)),
        send=send,
        max_in_flight=limit,
        settings=None,
        chunk_rows=2,
    )

    assert max(in_flight) <= 5 and queue_length(redis_url) == 5
    assert summary.in_flight == 5
    assert summary.pending == 9 - summary.dispatched


def test_the_limit_is_announced_for_a_few_intervals_and_falls_back_when_absent(
    celery_app: Any, redis_url: str
) -> None:
    assert shared_max_in_flight(celery_app, 200) == 200
    assert shared_max_in_flight(None, 200) == 200
    announce_max_in_flight(celery_app, 12, interval=30.0)
    client = redis.Redis.from_url(redis_url)
    try:
        assert 80 < client.pttl(MAX_IN_FLIGHT_KEY) / 1000 <= 90
        assert shared_max_in_flight(celery_app, 200) == 12
        client.set(MAX_IN_FLIGHT_KEY, "many")
        assert shared_max_in_flight(celery_app, 200) == 200
    finally:
        client.close()
