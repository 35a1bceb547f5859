"""process_image() logs one line per change of an image's status, with its fields."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    ObservedStorage,
    add_collection,
    stub_colorizer,
    write_corrupt_png,
    write_gray_png,
)

from storage import LocalStorage, StorageUnavailable
from workers.process import process_image

WORKER = "cpu0@test"


def _process_locally(sessions: sessionmaker[Session], image_id: int, **options: Any) -> None:
    process_image(
        image_id,
        sessions=sessions,
        storage_for=lambda uri: LocalStorage(),
        colorizer=stub_colorizer(),
        worker=WORKER,
        **options,
    )


def _changes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "workers.process" and hasattr(r, "status")]


def test_a_done_image_logs_running_then_done_with_collection_device_and_duration(
    sessions: sessionmaker[Session], source: Path, output: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], name="1920s")
    caplog.set_level(logging.INFO, logger="workers.process")

    _process_locally(sessions, ids["a.png"], device="cpu (test)")

    running, done = _changes(caplog)
    assert [running.__dict__["status"], done.__dict__["status"]] == ["running", "done"]
    for record in (running, done):
        assert record.__dict__["collection"] == "1920s"
        assert record.__dict__["image_id"] == ids["a.png"]
        assert record.__dict__["device"] == "cpu (test)"
        assert record.getMessage().startswith(f"collection 1920s image {ids['a.png']}: ")
    assert done.__dict__["duration_s"] >= 0
    assert "None" not in caplog.text


def test_failed_and_retried_images_log_their_change(
    sessions: sessionmaker[Session], source: Path, output: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_corrupt_png(source / "broken.png")
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["broken.png", "a.png"], name="night")
    caplog.set_level(logging.INFO, logger="workers.process")
    down = ObservedStorage(unavailable=lambda uri: True)
    common = {"sessions": sessions, "colorizer": stub_colorizer(), "worker": WORKER}

    process_image(ids["broken.png"], storage_for=lambda uri: LocalStorage(), **common)
    with pytest.raises(StorageUnavailable):
        process_image(ids["a.png"], storage_for=lambda uri: down, **common)

    changes = [(r.__dict__["image_id"], r.__dict__["status"]) for r in _changes(caplog)]
    assert changes == [
        (ids["broken.png"], "running"),
        (ids["broken.png"], "failed"),
        (ids["a.png"], "running"),
        (ids["a.png"], "retrying"),
    ]
    assert all(r.__dict__["collection"] == "night" for r in _changes(caplog))


def test_an_image_not_claimed_is_logged_without_a_collection_of_none(
    sessions: sessionmaker[Session], source: Path, output: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], queue=False)
    caplog.set_level(logging.INFO, logger="workers.process")

    _process_locally(sessions, ids["a.png"])

    [line] = [r.getMessage() for r in caplog.records if r.name == "workers.process"]
    assert line.startswith(f"image {ids['a.png']}: not claimed")
