"""Tests of ``catalog.metrics``: the numbers a scrape reports, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from catalog.engine import transaction
from catalog.metrics import collections_of_images, read_metrics
from tests.catalog.metrics_rows import GPU, seed_metrics_rows


def test_read_metrics_counts_statuses_rates_durations_oom_steps_and_lost_tries(
    sessions: sessionmaker[Session],
) -> None:
    seeded = seed_metrics_rows(sessions)
    with transaction(sessions) as db:
        numbers = read_metrics(db, window=timedelta(minutes=5), bounds=(0.5, 1.0, 60.0))
        collection_of = collections_of_images(db, [seeded.queued, 10**9])

    assert numbers.images["1920s"] == {
        "pending": 2,
        "queued": 1,
        "running": 1,
        "done": 4,
        "failed": 2,
        "skipped": 0,
        "cancelled": 0,
    }
    assert set(numbers.images["empty"].values()) == {0}
    # The done image finished an hour ago is outside the five-minute window.
    assert numbers.done_in_window == {"1920s": 3}
    assert numbers.window_s == 300.0
    by_key = {(h.input_size, h.device, h.precision): h for h in numbers.durations}
    cpu = by_key[(512, "cpu", "fp32")]
    assert (cpu.count, cpu.bucket_counts) == (3, (1, 2, 3))
    assert cpu.sum_s == pytest.approx(2.6)
    gpu = by_key[(768, GPU, "fp16")]
    assert (gpu.count, gpu.bucket_counts, gpu.sum_s) == (1, (0, 0, 1), 40.0)
    assert set(by_key) == {(512, "cpu", "fp32"), (768, GPU, "fp16")}
    assert numbers.oom_steps == {("1920s", 1024): 2, ("1920s", 768): 1}
    assert numbers.lost_attempts == {"1920s": 2}
    # An image failed before codes existed counts as unknown.
    assert numbers.failed == {("1920s", "oom.floor"): 1, ("1920s", "unknown"): 1}
    assert collection_of == {seeded.queued: "1920s"}


def test_read_metrics_refuses_bounds_that_do_not_ascend(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as db, pytest.raises(ValueError, match="ascend"):
        read_metrics(db, bounds=(1.0, 1.0))
