"""A real Celery worker with beat: the periodic dispatcher feeds a stand-in colorize task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from scheduler_testing import (
    CLAIMED_KEY,
    IN_FLIGHT_KEY,
    RECEIVED_KEY,
    ids_by_path,
    statuses,
    write_images,
)

from catalog import make_sessionmaker
from scheduler import submit
from storage.base import open_storage

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


def _start_worker(broker_url: str, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    env = dict(
        os.environ,
        STANDIN_BROKER_URL=broker_url,
        STANDIN_DATABASE_URL=database_url,
        STANDIN_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        STANDIN_INTERVAL="0.3",
        PYTHONPATH=os.pathsep.join([str(here), str(here.parents[1])]),
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(here / "standin_worker.py")],
            cwd=here,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # the pool and beat children share the session of the worker
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    source = tmp_path / "scans"
    write_images(source, [f"p{index:03d}.tif" for index in range(IMAGES)])
    sessions = make_sessionmaker(postgres_catalog_url)
    summary = submit(
        sessions,
        name="night",
        source=source,
        output=tmp_path / "colour",
        storage=open_storage(source),
        send=None,
        max_in_flight=MAX_IN_FLIGHT,
    )
    assert summary.new == IMAGES
    ids = sorted(ids_by_path(sessions, "night").values())

    proc = _start_worker(redis_url, postgres_catalog_url, worker_log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while client.llen(CLAIMED_KEY) < IMAGES and time.monotonic() < deadline:
            assert proc.poll() is None, worker_log.read_text()
            time.sleep(0.2)
        # Let a few more ticks run: they must not send anything again.
        time.sleep(1.0)
    finally:
        _stop_worker(proc)

    received = sorted(int(item) for item in client.lrange(RECEIVED_KEY, 0, -1))
    claimed = sorted(int(item) for item in client.lrange(CLAIMED_KEY, 0, -1))
    assert claimed == ids, worker_log.read_text()
    assert received == ids, "an image was sent more than once"
    in_flight = [int(item) for item in client.lrange(IN_FLIGHT_KEY, 0, -1)]
    assert 0 < max(in_flight) <= MAX_IN_FLIGHT
    assert set(statuses(sessions).values()) == {"running"}
    sessions.kw["bind"].dispose()
