"""Tests of ``panchro submit``'s refusals and failures: each is one line, no traceback.

Bad options, weights, sources and names, a database without schema and an unreachable
broker, against real catalogs (SQLite, PostgreSQL) and a real Redis broker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from submit_helpers import COLORIZE_QUEUE, assert_one_line_error, images, run_submit

from catalog import ImageStatus, make_engine


def test_submit_with_a_file_that_is_no_checkpoint_fails_before_scanning(
    redis_url: str, scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    weights = tmp_path / "weights.pth"
    weights.write_text("not a checkpoint")

    result = run_submit(url, redis_url, scans, tmp_path / "out", "--weights", str(weights))

    assert_one_line_error(result, 1, "reading the checkpoint", "weights.pth")
    assert not (tmp_path / "catalog.sqlite3").exists()


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--size", "500"], ["--size", "multiple of 32"]),
        (["--size", "224"], ["--size", "256"]),
        (["--size", "4096"], ["--size", "2048"]),
        (["--preset", "group"], ["--preset"]),
        (["--preset", "portrait", "--size", "768"], ["--preset", "--size"]),
        (["--not-before", "25:00"], ["--not-before", "HH:MM"]),
        (["--priority", "high"], ["--priority"]),
    ],
)
def test_submit_refuses_bad_options_with_a_usage_error(
    redis_url: str, scans: Path, tmp_path: Path, option: list[str], words: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = run_submit(url, redis_url, scans, tmp_path / "out", *option)

    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "catalog.sqlite3").exists()


def test_submit_refuses_an_output_inside_the_source(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path
) -> None:
    result = run_submit(catalog_url, redis_url, scans, scans / "colour")

    assert_one_line_error(result, 1, "inside the source")
    assert broker.llen(COLORIZE_QUEUE) == 0


def test_submit_of_a_missing_source_fails_cleanly(
    catalog_url: str, redis_url: str, tmp_path: Path
) -> None:
    result = run_submit(catalog_url, redis_url, tmp_path / "nowhere", tmp_path / "out")

    assert_one_line_error(result, 1, "nowhere")


def test_submit_of_a_name_taken_by_another_source_fails_cleanly(
    catalog_url: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(scans, other)
    first = run_submit(catalog_url, redis_url, scans, tmp_path / "out", "--no-dispatch")

    second = run_submit(catalog_url, redis_url, other, tmp_path / "out", "--no-dispatch")

    assert first.exit_code == 0, first.output
    assert_one_line_error(second, 1, "already exists")


def test_submit_to_postgresql_without_schema_asks_for_db_upgrade(
    schemaless_postgres: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    url = schemaless_postgres

    result = run_submit(url, redis_url, scans, tmp_path / "out")

    assert_one_line_error(result, 1, "panchro db upgrade")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0


@pytest.mark.slow
def test_submit_with_an_unreachable_broker_registers_and_then_fails(
    scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = run_submit(url, "redis://127.0.0.1:9/0", scans, tmp_path / "out")

    assert_one_line_error(result, 1, "dispatching failed", "panchro scheduler")
    assert "4 new" in result.stdout
    statuses = images(url)
    assert statuses.pop("notes.txt") is ImageStatus.SKIPPED
    assert set(statuses.values()) == {ImageStatus.PENDING}
