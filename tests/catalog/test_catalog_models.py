"""The migrated schema keeps values honest at the database level, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from catalog_rows import read_collection
from sqlalchemy import insert, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import Collection, Image, ImageStatus


def test_status_check_constraint_refuses_a_bogus_value_written_in_raw_sql(
    sessions: sessionmaker[Session], image_ids: list[int]
) -> None:
    with pytest.raises(IntegrityError, match="ck_images_status"), sessions.begin() as db:
        db.execute(text("UPDATE images SET status = 'bogus' WHERE id = :id"), {"id": image_ids[0]})


def test_attempt_outcome_check_constraint_refuses_a_bogus_value(
    sessions: sessionmaker[Session], image_ids: list[int]
) -> None:
    with pytest.raises(IntegrityError, match="ck_attempts_outcome"), sessions.begin() as db:
        db.execute(
            text(
                "INSERT INTO attempts (image_id, number, outcome, started_at) "
                "VALUES (:id, 1, 'exploded', CURRENT_TIMESTAMP)"
            ),
            {"id": image_ids[0]},
        )


def test_orm_refuses_a_status_string_outside_the_enum(
    sessions: sessionmaker[Session], image_ids: list[int]
) -> None:
    with pytest.raises(StatementError, match="bogus"), sessions.begin() as db:
        db.execute(update(Image).where(Image.id == image_ids[0]).values(status="bogus"))


def test_two_images_of_one_collection_cannot_share_an_output(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    row = {"collection_id": collection_id, "output_uri": "s3://colour/a.tif", "status": "pending"}
    with pytest.raises(IntegrityError, match="output_uri"), sessions.begin() as db:
        db.execute(
            insert(Image),
            [
                {**row, "source_uri": "s3://scans/a.tif", "relative_path": "a.tif"},
                {**row, "source_uri": "s3://scans/a.png", "relative_path": "a.png"},
            ],
        )


def test_images_of_different_collections_may_share_an_output(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        other = Collection(name="other", source="s3://scans", output="s3://colour")
        db.add(other)
        db.flush()
        for owner in (collection_id, other.id):
            db.add(
                Image(
                    collection_id=owner,
                    source_uri="s3://scans/a.tif",
                    relative_path="a.tif",
                    output_uri="s3://colour/a.tif",
                )
            )
    with sessions.begin() as db:
        assert db.scalar(text("SELECT count(*) FROM images")) == 2


def test_foreign_keys_are_enforced(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), sessions.begin() as db:
        db.add(
            Image(collection_id=999, source_uri="a", relative_path="a", output_uri="b"),
        )


def test_datetimes_come_back_timezone_aware_in_utc(sessions: sessionmaker[Session]) -> None:
    paris_summer = timezone(timedelta(hours=2))
    written = datetime(2024, 7, 1, 23, 30, 15, 123456, tzinfo=paris_summer)
    with sessions.begin() as db:
        collection = Collection(
            name="times", source="a", output="b", created_at=written, updated_at=written
        )
        db.add(collection)
        db.flush()
        collection_id = collection.id

    read = read_collection(sessions, collection_id)

    assert read.created_at.tzinfo is UTC
    assert read.created_at == written
    assert read.created_at.hour == 21


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as db:
        db.add(Collection(name="naive", source="a", output="b", created_at=datetime(2024, 1, 1)))


def test_new_rows_get_defaults(sessions: sessionmaker[Session], collection_id: int) -> None:
    collection = read_collection(sessions, collection_id)

    assert collection.status.value == "active"
    assert collection.priority == 0
    assert collection.untrained is False
    assert collection.options == {}
    assert collection.created_at.tzinfo is UTC


def test_image_status_values_are_the_contract() -> None:
    assert [status.value for status in ImageStatus] == [
        "pending",
        "queued",
        "running",
        "done",
        "failed",
        "skipped",
        "cancelled",
    ]
