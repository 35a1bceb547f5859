"""A real Celery worker that colorizes three images per forward, on PostgreSQL and Redis."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from recovery_helpers import start_worker, stop_worker, wait_for
from workers_helpers import attempts_of, submit_folder, write_gray16_tiff, write_gray_png

from catalog import AttemptOutcome, ImageStatus, list_images, make_sessionmaker, transaction
from migrations import upgrade

#: Images per forward of the worker.
BATCH = 3


@pytest.mark.slow
def test_a_worker_with_batch_3_colorizes_7_images_once_each_in_3_tasks(
    postgres_database_factory: Any, redis_url: str, source: Path, output: Path, tmp_path: Path
) -> None:
    database_url: str = postgres_database_factory()
    upgrade(database_url)
    sessions = make_sessionmaker(database_url)
    for index in range(7):
        if index == 5:
            write_gray16_tiff(source / f"{index}.tif", size=(40 + index, 30))
        else:
            write_gray_png(source / f"{index}.png", size=(50, 30 + index))
    summary = submit_folder(sessions, redis_url, "batches", source, output)
    assert summary.dispatched == 7
    log = tmp_path / "worker.log"
    helper = Path(__file__).resolve().parent / "workers_helpers.py"
    command = [sys.executable, str(helper), redis_url, database_url, "cpu0@batch", str(BATCH)]

    def finished() -> bool:
        assert proc.poll() is None, log.read_text()
        with transaction(sessions) as db:
            statuses = {image.status for image in list_images(db, "batches")}
        return statuses == {ImageStatus.DONE}

    proc = start_worker(command, log)
    try:
        wait_for(finished, "every image done")
        # Every message has been taken: the four of images claimed by another did nothing.
        time.sleep(2)
    finally:
        stop_worker(proc)
    with transaction(sessions) as db:
        images = list_images(db, "batches")

    text = log.read_text()
    try:
        assert [image.status for image in images] == [ImageStatus.DONE] * 7, text
        attempts = [attempts_of(sessions, image.id) for image in images]
        assert [[a.outcome for a in tries] for tries in attempts] == [[AttemptOutcome.DONE]] * 7
        # One message took each batch: the images of a batch share its task id.
        batches = Counter(image.task_id for image in images)
        assert sorted(batches.values()) == [1, 3, 3], batches
        assert text.count("in one forward at 256 px") == 2, text
        assert text.count(": done in ") == 7, text
        assert all((output / Path(image.relative_path)).exists() for image in images)
    finally:
        sessions.kw["bind"].dispose()
