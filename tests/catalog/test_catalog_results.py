"""Recording results: done with provenance, out-of-memory retries, failures and skips."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from catalog_rows import read_image
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import AttemptOutcome, ImageStatus
from catalog.queries import list_attempts
from catalog.transitions import (
    Claim,
    Provenance,
    claim_image,
    mark_done,
    mark_failed,
    queue_pending,
    record_oom_retry,
)

PROVENANCE = Provenance(
    output_sha256="ab" * 32,
    output_size=123_456,
    input_size=512,
    precision="fp16",
    backend="cuda",
    device="cuda:0 NVIDIA A100",
    model_name="ddcolor_paper",
    checkpoint_sha256="cd" * 32,
    source_sha256="ef" * 32,
    width=3000,
    height=2000,
    mode="I;16",
    bit_depth=16,
)


@pytest.fixture
def claim(sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]) -> Claim:
    """A running try at the collection's first image."""
    with sessions.begin() as db:
        queue_pending(db, collection_id, 1)
        claimed = claim_image(db, image_ids[0], worker="node-1", device="cuda:0", task_id="t1")
    assert claimed is not None
    return claimed


def _outcomes(
    sessions: sessionmaker[Session], image_id: int
) -> list[tuple[str | None, int | None]]:
    with sessions.begin() as db:
        return [
            (attempt.outcome.value if attempt.outcome else None, attempt.input_size)
            for attempt in list_attempts(db, image_id)
        ]


def test_mark_done_records_the_output_and_its_provenance(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        assert mark_done(db, claim.image_id, claim.attempt_id, PROVENANCE)

    image = read_image(sessions, claim.image_id)
    assert image.status is ImageStatus.DONE
    assert (image.output_sha256, image.output_size, image.input_size) == ("ab" * 32, 123_456, 512)
    assert (image.precision, image.backend, image.model_name) == ("fp16", "cuda", "ddcolor_paper")
    assert (image.width, image.height, image.mode, image.bit_depth) == (3000, 2000, "I;16", 16)
    assert image.sizes_tried == [512]
    assert image.device == "cuda:0 NVIDIA A100"
    assert image.finished_at is not None and image.started_at is not None
    assert image.duration_s is not None and image.duration_s >= 0
    assert _outcomes(sessions, claim.image_id) == [("done", 512)]


def test_out_of_memory_retries_leave_one_attempt_row_per_size(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        second = record_oom_retry(db, claim.attempt_id, input_size=1024, error="CUDA OOM")
        assert second is not None
        third = record_oom_retry(db, second, input_size=768, error="CUDA OOM")
        assert third is not None
        provenance = Provenance(
            output_sha256="00",
            output_size=1,
            input_size=512,
            precision="fp16",
            sizes_tried=(1024, 768, 512),
        )
        assert mark_done(db, claim.image_id, third, provenance)

    assert _outcomes(sessions, claim.image_id) == [
        ("oom_retry", 1024),
        ("oom_retry", 768),
        ("done", 512),
    ]
    image = read_image(sessions, claim.image_id)
    assert (image.attempts, image.sizes_tried, image.status) == (
        3,
        [1024, 768, 512],
        ImageStatus.DONE,
    )
    with sessions.begin() as db:
        attempts = list_attempts(db, claim.image_id)
    assert [attempt.worker for attempt in attempts] == ["node-1"] * 3
    assert attempts[0].error == "CUDA OOM"


def test_a_superseded_try_cannot_record_a_result(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        newer = record_oom_retry(db, claim.attempt_id, input_size=1024, error="OOM")

    with sessions.begin() as db:
        assert not mark_done(db, claim.image_id, claim.attempt_id, PROVENANCE)
        assert record_oom_retry(db, claim.attempt_id, input_size=768, error="OOM") is None

    assert newer is not None
    image = read_image(sessions, claim.image_id)
    assert (image.status, image.attempts) == (ImageStatus.RUNNING, 2)


def test_a_worker_presumed_dead_cannot_overwrite_the_newer_try(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        takeover = claim_image(db, claim.image_id, worker="node-2", task_id="t1")
    assert takeover is not None

    with sessions.begin() as db:
        assert not mark_done(db, claim.image_id, claim.attempt_id, PROVENANCE)
        assert not mark_failed(db, claim.image_id, claim.attempt_id, "late", code="unknown")
    with sessions.begin() as db:
        assert mark_done(db, claim.image_id, takeover.attempt_id, PROVENANCE)

    image = read_image(sessions, claim.image_id)
    assert (image.status, image.worker_host) == (ImageStatus.DONE, "node-2")
    assert _outcomes(sessions, claim.image_id) == [("lost", None), ("done", 512)]


def test_mark_done_refuses_an_attempt_of_another_image(
    sessions: sessionmaker[Session], claim: Claim, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        assert not mark_done(db, image_ids[1], claim.attempt_id, PROVENANCE)

    assert read_image(sessions, claim.image_id).status is ImageStatus.RUNNING


def test_mark_done_keeps_known_details_the_worker_did_not_report(
    sessions: sessionmaker[Session], claim: Claim, force_status: Callable[..., None]
) -> None:
    force_status(claim.image_id, ImageStatus.RUNNING, width=640, height=480)
    sparse = Provenance(output_sha256="1", output_size=1, input_size=256, precision="fp32")

    with sessions.begin() as db:
        assert mark_done(db, claim.image_id, claim.attempt_id, sparse)

    image = read_image(sessions, claim.image_id)
    assert (image.width, image.height, image.device) == (640, 480, "cuda:0")


def test_mark_failed_records_the_reason_on_the_image_and_the_try(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        assert mark_failed(
            db, claim.image_id, claim.attempt_id, "truncated TIFF", code="decode.truncated"
        )

    image = read_image(sessions, claim.image_id)
    assert (image.status, image.last_error) == (ImageStatus.FAILED, "truncated TIFF")
    assert image.failure_code == "decode.truncated"
    assert image.finished_at is not None
    with sessions.begin() as db:
        (attempt,) = list_attempts(db, claim.image_id)
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.FAILED, "truncated TIFF")


def test_mark_failed_only_applies_to_a_running_image(
    sessions: sessionmaker[Session], claim: Claim
) -> None:
    with sessions.begin() as db:
        mark_done(db, claim.image_id, claim.attempt_id, PROVENANCE)
    with sessions.begin() as db:
        assert not mark_failed(db, claim.image_id, claim.attempt_id, "too late", code="unknown")

    assert read_image(sessions, claim.image_id).status is ImageStatus.DONE
