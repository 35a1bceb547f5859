"""Tests of ``panchro scheduler``: its start-up check, and a running scheduler's passes.

The scheduler runs against a real catalog (SQLite, or an unmigrated PostgreSQL) and a
real Redis broker whose ``colorize`` queue is counted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from submit_helpers import COLORIZE_QUEUE, IMAGES, assert_one_line_error, images, run, run_submit

from catalog import ImageStatus
from workers.app import create_app

#: Longest wait for a running scheduler to send the pending images, in seconds.
SCHEDULER_WAIT_S = 60.0


# ------------------------------------------------------------------------------ scheduler


def test_scheduler_on_a_database_without_schema_fails_before_starting(
    schemaless_postgres: str, redis_url: str
) -> None:
    result = run(schemaless_postgres, redis_url, "scheduler")

    assert_one_line_error(result, 1, "panchro db upgrade")


@pytest.mark.slow
def test_scheduler_keeps_sending_pending_images_until_stopped(
    redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    submitted = run_submit(url, redis_url, scans, tmp_path / "out", "--no-dispatch")
    assert submitted.exit_code == 0, submitted.output
    log = tmp_path / "scheduler.log"
    code = "from panchro.cli import main; main()"
    argv = [
        sys.executable,
        "-c",
        code,
        "--database-url",
        url,
        "--broker-url",
        redis_url,
        "scheduler",
        "--interval",
        "0.2",
        "--loglevel",
        "warning",
    ]

    with log.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            # A bound on waiting, not on speed: the passes run every 0.2 s.
            deadline = time.monotonic() + SCHEDULER_WAIT_S
            while broker.llen(COLORIZE_QUEUE) < len(IMAGES) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            # The scheduler is no Celery worker: nothing named scheduler@ answers a ping.
            app = create_app(broker_url=redis_url)
            replies = app.control.ping(timeout=0.5)
            assert not [
                reply for reply in replies if any(n.startswith("scheduler@") for n in reply)
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    assert broker.llen(COLORIZE_QUEUE) == len(IMAGES), log.read_text()
    assert "pidbox command error" not in log.read_text()
    statuses = images(url)
    assert statuses.pop("notes.txt") is ImageStatus.SKIPPED
    assert set(statuses.values()) == {ImageStatus.QUEUED}
