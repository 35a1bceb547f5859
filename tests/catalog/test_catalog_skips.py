"""A try that skips its image (running -> skipped), and what done records beside provenance."""

from __future__ import annotations

from catalog_rows import read_image
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import AttemptOutcome, ImageStatus
from catalog.queries import list_attempts
from catalog.transitions import (
    Claim,
    Provenance,
    claim_image,
    mark_done,
    mark_skipped,
    queue_pending,
    retry_images,
)

WARNING = {"code": "source.colour", "message": "the original is already in colour"}


def _claim(sessions: sessionmaker[Session], collection_id: int, image_id: int) -> Claim:
    with sessions.begin() as db:
        queue_pending(db, collection_id, 5)
        claimed = claim_image(db, image_id, worker="node-1", device="cpu", task_id=None)
    assert claimed is not None
    return claimed


def test_mark_skipped_records_the_reason_and_code_and_closes_the_try(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    claim = _claim(sessions, collection_id, image_ids[0])

    with sessions.begin() as db:
        skipped = mark_skipped(
            db, claim.image_id, claim.attempt_id, "in colour", failure_code="skip.colour"
        )
        again = mark_skipped(db, claim.image_id, claim.attempt_id, "twice", failure_code="x")

    assert (skipped, again) == (True, False)
    row = read_image(sessions, claim.image_id)
    assert (row.status, row.last_error, row.failure_code) == (
        ImageStatus.SKIPPED,
        "in colour",
        "skip.colour",
    )
    assert row.finished_at is not None
    with sessions.begin() as db:
        [attempt] = list_attempts(db, claim.image_id)
        assert (attempt.outcome, attempt.error) == (AttemptOutcome.DONE, "in colour")


def test_done_records_upsampling_and_warnings_and_clears_an_earlier_skip(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    claim = _claim(sessions, collection_id, image_ids[0])
    with sessions.begin() as db:
        mark_skipped(db, claim.image_id, claim.attempt_id, "in colour", failure_code="skip.colour")
        assert retry_images(db, collection_id, statuses=[ImageStatus.SKIPPED]) == 1
    claim = _claim(sessions, collection_id, image_ids[0])
    provenance = Provenance(
        output_sha256="ab" * 32,
        output_size=10,
        input_size=256,
        precision="fp32",
        upsample="nearest",
        warnings=(WARNING,),
    )

    with sessions.begin() as db:
        assert mark_done(db, claim.image_id, claim.attempt_id, provenance)

    row = read_image(sessions, claim.image_id)
    assert (row.status, row.upsample, row.failure_code) == (ImageStatus.DONE, "nearest", None)
    assert row.warnings == [WARNING]


def test_done_without_warnings_stores_none(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    claim = _claim(sessions, collection_id, image_ids[1])
    provenance = Provenance(
        output_sha256="ab" * 32, output_size=10, input_size=256, precision="fp32"
    )
    with sessions.begin() as db:
        assert mark_done(db, claim.image_id, claim.attempt_id, provenance)
    assert read_image(sessions, claim.image_id).warnings is None
