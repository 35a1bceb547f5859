"""A real Celery worker with beat: the periodic dispatcher feeds a stand-in colorize task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from scheduler_testing import (
    CLAIMED_KEY,
    IN_FLIGHT_KEY,
    RECEIVED_KEY,
    ids_by_path,
    start_standin_worker,
    statuses,
    stop_worker,
    submit_night,
)
from sqlalchemy import select, update

from catalog import (
    AttemptOutcome,
    Image,
    claim_image,
    list_attempts,
    make_sessionmaker,
    queue_pending,
    transaction,
)

pytestmark = pytest.mark.slow

#: Seconds the worker gets to start and work through the test's images; a guard against
#: hanging, not a measurement (the test checks what was delivered, not how fast).
DEADLINE_S = 120.0
#: Images in the test collection, and the most of them in flight at once.
IMAGES, MAX_IN_FLIGHT = 12, 4


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    """Where the worker's output goes; printed if the test fails."""
    return tmp_path / "worker.log"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_worker_with_beat_dispatches_every_image_exactly_once_within_the_limit(
    postgres_catalog_url: str,
    redis_url: str,
    client: redis.Redis,
    tmp_path: Path,
    worker_log: Path,
) -> None:
    sessions = make_sessionmaker(postgres_catalog_url)
    names = [f"p{index:03d}.tif" for index in range(IMAGES)]
    summary = submit_night(sessions, tmp_path, names, max_in_flight=MAX_IN_FLIGHT)
    assert summary.new == IMAGES
    ids = sorted(ids_by_path(sessions, "night").values())

    proc = start_standin_worker(
        redis_url, postgres_catalog_url, worker_log, max_in_flight=MAX_IN_FLIGHT, interval=0.3
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while client.llen(CLAIMED_KEY) < IMAGES and time.monotonic() < deadline:
            assert proc.poll() is None, worker_log.read_text()
            time.sleep(0.2)
        # Let a few more ticks run: they must not send anything again.
        time.sleep(1.0)
    finally:
        stop_worker(proc)

    received = sorted(int(item) for item in client.lrange(RECEIVED_KEY, 0, -1))
    claimed = sorted(int(item) for item in client.lrange(CLAIMED_KEY, 0, -1))
    assert claimed == ids, worker_log.read_text()
    assert received == ids, "an image was sent more than once"
    in_flight = [int(item) for item in client.lrange(IN_FLIGHT_KEY, 0, -1)]
    assert 0 < max(in_flight) <= MAX_IN_FLIGHT
    assert set(statuses(sessions).values()) == {"running"}
    sessions.kw["bind"].dispose()


def test_the_periodic_pass_reaps_an_image_left_running_by_a_vanished_worker(
    postgres_catalog_url: str,
    redis_url: str,
    client: redis.Redis,
    tmp_path: Path,
    worker_log: Path,
) -> None:
    sessions = make_sessionmaker(postgres_catalog_url)
    submit_night(sessions, tmp_path, ["lost.tif"], max_in_flight=1)
    (image,) = ids_by_path(sessions, "night").values()
    # A worker claimed it an hour ago and vanished; its message was acknowledged.
    with transaction(sessions) as db:
        queue_pending(
            db, ids_by_path(sessions, "night") and db.scalar(select(Image.collection_id)) or 0, 1
        )
        claim_image(db, image, worker="gpu9@gone", task_id="vanished")
        db.execute(update(Image).values(started_at=datetime.now(UTC) - timedelta(hours=1)))

    proc = start_standin_worker(
        redis_url, postgres_catalog_url, worker_log, max_in_flight=1, interval=0.3, reap_after=5
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while client.llen(CLAIMED_KEY) < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, worker_log.read_text()
            time.sleep(0.2)
    finally:
        stop_worker(proc)

    # Handed back by the reaper (no live worker held "vanished"), sent again, claimed.
    assert [int(item) for item in client.lrange(CLAIMED_KEY, 0, -1)] == [image]
    with transaction(sessions) as db:
        outcomes = [a.outcome for a in list_attempts(db, image)]
    assert outcomes[:2] == [AttemptOutcome.LOST, None], worker_log.read_text()
    sessions.kw["bind"].dispose()
