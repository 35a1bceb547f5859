"""Which outputs are an image's own, and where collections read and write (SQLite, PostgreSQL)."""

from __future__ import annotations

from catalog_rows import scanned
from sqlalchemy.orm import Session, sessionmaker

from catalog import (
    ImageStatus,
    Provenance,
    claim_image,
    collection_roots,
    create_or_get_collection,
    get_image,
    image_sources_among,
    mark_done,
    queue_pending,
    record_output_intent,
    recorded_outputs,
    register_images,
    release_lost,
    transaction,
)

OLD, NEW = "a" * 64, "b" * 64


def _claim(sessions: sessionmaker[Session], collection_id: int, image_id: int) -> int:
    with transaction(sessions) as db:
        queue_pending(db, collection_id, 10)
        claim = claim_image(db, image_id, worker="w", task_id=f"m-{image_id}")
        assert claim is not None
        return claim.attempt_id


def test_an_intent_recorded_by_a_try_that_died_is_still_the_images_own(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    image = image_ids[0]
    first = _claim(sessions, collection_id, image)
    with transaction(sessions) as db:
        assert record_output_intent(db, image, first, OLD) == {OLD}
    with transaction(sessions) as db:  # the worker died after its write: the try is lost
        assert release_lost(db, collection_id=collection_id).requeued == 1

    second = _claim(sessions, collection_id, image)
    with transaction(sessions) as db:
        ours = record_output_intent(db, image, second, NEW)

    assert ours == {OLD, NEW}
    with transaction(sessions) as db:
        assert recorded_outputs(db, image_ids[1]) == frozenset()


def test_a_try_that_no_longer_holds_the_image_records_no_intent(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    image = image_ids[0]
    first = _claim(sessions, collection_id, image)
    with transaction(sessions) as db:
        release_lost(db, collection_id=collection_id)
    _claim(sessions, collection_id, image)

    with transaction(sessions) as db:
        assert record_output_intent(db, image, first, OLD) is None
        assert recorded_outputs(db, image) == frozenset()


def test_the_done_output_stays_the_images_own_after_the_source_changed(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    image = image_ids[0]
    attempt = _claim(sessions, collection_id, image)
    with transaction(sessions) as db:
        record_output_intent(db, image, attempt, OLD)
        assert mark_done(db, image, attempt, Provenance(OLD, 10, 512, "fp32"))
    with transaction(sessions) as db:  # a changed source resets the image's output fields
        register_images(db, collection_id, scanned(1, checksum="v2"))
        assert recorded_outputs(db, image) == {OLD}


def test_collection_roots_and_the_sources_at_a_location(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with transaction(sessions) as db:
        other, _ = create_or_get_collection(db, "other", "s3://other", "s3://other-colour")
        roots = collection_roots(db)
        found = image_sources_among(
            db,
            [collection_id, other.id],
            ["s3://scans/img/000001.tif", "s3://colour/img/000001.tif"],
        )

    assert [(r.name, r.source, r.output) for r in roots] == [
        ("scans", "s3://scans", "s3://colour"),
        ("other", "s3://other", "s3://other-colour"),
    ]
    assert found == ["s3://scans/img/000001.tif"]
    with transaction(sessions) as db:
        assert image_sources_among(db, [other.id], ["s3://scans/img/000001.tif"]) == []


def test_done_status_is_untouched_by_recording_an_intent(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    image = image_ids[0]
    attempt = _claim(sessions, collection_id, image)
    with transaction(sessions) as db:
        record_output_intent(db, image, attempt, OLD)
        row = get_image(db, image)
        assert (row.status, row.output_sha256) == (ImageStatus.RUNNING, None)
