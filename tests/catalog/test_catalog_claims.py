"""Claiming: exactly one worker gets a queued image; dead workers' tries are taken over."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from catalog_rows import read_image
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import AttemptOutcome, ImageStatus
from catalog.queries import list_attempts
from catalog.transitions import (
    MAX_LOST_ATTEMPTS,
    Claim,
    claim_image,
    held_attempt,
    queue_pending,
    release_lost,
)

#: Seconds a test waits for a thread it expects to finish (a safety net, not a measure).
JOIN_TIMEOUT_S = 60.0


@pytest.fixture
def queued_id(sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]) -> int:
    """Id of a queued image (the first of the collection)."""
    with sessions.begin() as db:
        queue_pending(db, collection_id, 1)
    return image_ids[0]


def _claim(
    sessions: sessionmaker[Session], image_id: int, worker: str = "gpu-node-1", **kwargs: str
) -> Claim | None:
    with sessions.begin() as db:
        return claim_image(db, image_id, worker=worker, device="cuda:0", **kwargs)


def test_claim_image_moves_a_queued_image_to_running_and_opens_a_try(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    claim = _claim(sessions, queued_id, task_id="task-1")

    assert claim is not None
    assert (claim.image_id, claim.attempt_number) == (queued_id, 1)
    assert claim.source_uri == "s3://scans/img/000000.tif"
    assert claim.output_uri == "s3://colour/img/000000.tif"
    image = read_image(sessions, queued_id)
    assert image.status is ImageStatus.RUNNING
    assert (image.attempts, image.worker_host, image.device, image.task_id) == (
        1,
        "gpu-node-1",
        "cuda:0",
        "task-1",
    )
    assert image.started_at is not None and image.started_at.tzinfo is UTC
    with sessions.begin() as db:
        (attempt,) = list_attempts(db, queued_id)
    assert (attempt.id, attempt.number, attempt.worker, attempt.outcome) == (
        claim.attempt_id,
        1,
        "gpu-node-1",
        None,
    )


@pytest.mark.parametrize(
    "status",
    [
        ImageStatus.PENDING,
        ImageStatus.DONE,
        ImageStatus.FAILED,
        ImageStatus.SKIPPED,
        ImageStatus.CANCELLED,
    ],
)
def test_claim_image_returns_none_when_the_image_is_not_queued(
    sessions: sessionmaker[Session],
    image_ids: list[int],
    force_status: Callable[..., None],
    status: ImageStatus,
) -> None:
    force_status(image_ids[0], status)

    assert _claim(sessions, image_ids[0]) is None
    assert read_image(sessions, image_ids[0]).status is status
    with sessions.begin() as db:
        assert list_attempts(db, image_ids[0]) == []


def test_claim_image_returns_none_for_an_unknown_image(sessions: sessionmaker[Session]) -> None:
    assert _claim(sessions, 424242) is None


def test_claim_image_returns_none_when_already_running_under_another_message(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    first = _claim(sessions, queued_id, task_id="task-1")

    second = _claim(sessions, queued_id, worker="gpu-node-2", task_id="task-2")

    assert first is not None and second is None
    image = read_image(sessions, queued_id)
    assert (image.attempts, image.lost_attempts, image.worker_host) == (1, 0, "gpu-node-1")


def test_claim_image_without_a_task_id_never_takes_over_a_running_image(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    assert _claim(sessions, queued_id) is not None
    assert _claim(sessions, queued_id) is None


def test_redelivered_message_closes_the_dead_workers_try_as_lost_and_reclaims(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    first = _claim(sessions, queued_id, task_id="task-1")

    again = _claim(sessions, queued_id, worker="gpu-node-2", task_id="task-1")

    assert first is not None and again is not None
    assert again.attempt_number == 2 and again.attempt_id != first.attempt_id
    image = read_image(sessions, queued_id)
    assert (image.status, image.attempts, image.lost_attempts, image.worker_host) == (
        ImageStatus.RUNNING,
        2,
        1,
        "gpu-node-2",
    )
    with sessions.begin() as db:
        lost, current = list_attempts(db, queued_id)
    assert (lost.outcome, current.outcome) == (AttemptOutcome.LOST, None)
    assert lost.finished_at is not None and lost.error


def test_an_image_whose_workers_keep_dying_is_failed_at_the_cap(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    # The first delivery, then one redelivery per death of the worker holding the image.
    deliveries = MAX_LOST_ATTEMPTS + 1
    claims = [_claim(sessions, queued_id, task_id="task-1") for _ in range(deliveries)]

    assert all(claim is not None for claim in claims[:-1])
    assert claims[-1] is None
    image = read_image(sessions, queued_id)
    assert image.status is ImageStatus.FAILED
    assert image.lost_attempts == MAX_LOST_ATTEMPTS
    assert image.last_error is not None
    assert f"worker died {MAX_LOST_ATTEMPTS} times" in image.last_error
    assert image.failure_code == "worker.lost"
    with sessions.begin() as db:
        outcomes = [attempt.outcome for attempt in list_attempts(db, queued_id)]
    assert outcomes == [AttemptOutcome.LOST] * MAX_LOST_ATTEMPTS


def test_concurrent_claims_of_one_image_have_exactly_one_winner(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    contenders = 4
    barrier = threading.Barrier(contenders)
    results: list[Claim | None] = []
    errors: list[BaseException] = []

    def contend(number: int) -> None:
        try:
            barrier.wait()
            results.append(_claim(sessions, queued_id, worker=f"w{number}", task_id=f"t{number}"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)

    assert errors == []
    assert len(results) == contenders
    assert sum(result is not None for result in results) == 1
    image = read_image(sessions, queued_id)
    assert (image.attempts, image.lost_attempts) == (1, 0)


def _wait_until_blocked(engine: Engine, application_name: str) -> None:
    """Poll PostgreSQL until the named connection waits for a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = :name AND wait_event_type = 'Lock'"
    )
    deadline = datetime.now(UTC) + timedelta(seconds=JOIN_TIMEOUT_S)
    with engine.connect() as conn:
        while conn.execute(query, {"name": application_name}).scalar() == 0:
            assert datetime.now(UTC) < deadline, "the second claim never waited for the lock"
            conn.rollback()


def test_on_postgresql_a_claim_blocked_by_a_winning_claim_loses_after_it_commits(
    sessions: sessionmaker[Session], engine: Engine, queued_id: int, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("needs PostgreSQL's row locks and pg_stat_activity")
    outcome: list[Claim | None] = []

    def second_claim() -> None:
        with sessions.begin() as db:
            db.execute(text("SET application_name = 'second-claimant'"))
            outcome.append(claim_image(db, queued_id, worker="late", task_id="t2"))

    with sessions.begin() as first:
        won = claim_image(first, queued_id, worker="early", task_id="t1")
        thread = threading.Thread(target=second_claim)
        thread.start()
        _wait_until_blocked(engine, "second-claimant")
    thread.join(JOIN_TIMEOUT_S)

    assert won is not None
    assert outcome == [None]
    assert read_image(sessions, queued_id).worker_host == "early"


def test_release_lost_returns_running_images_to_pending_and_closes_their_tries(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        queue_pending(db, collection_id, 2)
    for image_id in image_ids[:2]:
        _claim(sessions, image_id, task_id=f"t{image_id}")

    with sessions.begin() as db:
        released = release_lost(db, collection_id=collection_id)

    assert released == (2, 0)
    image = read_image(sessions, image_ids[0])
    assert (image.status, image.lost_attempts, image.task_id) == (ImageStatus.PENDING, 1, None)
    with sessions.begin() as db:
        (attempt,) = list_attempts(db, image_ids[0])
    assert attempt.outcome is AttemptOutcome.LOST


def test_release_lost_fails_images_that_reach_the_cap(
    sessions: sessionmaker[Session],
    queued_id: int,
    force_status: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _claim(sessions, queued_id, task_id="t")
    force_status(queued_id, ImageStatus.RUNNING, lost_attempts=MAX_LOST_ATTEMPTS - 1)

    with sessions.begin() as db:
        released = release_lost(db)

    assert released == (0, 1)
    # Released across every collection: the line still names the image's own.
    [record] = [r for r in caplog.records if r.name == "catalog.transitions.claims"]
    collection_id = read_image(sessions, queued_id).collection_id
    assert record.getMessage().startswith(f"collection {collection_id} image {queued_id}: ")
    assert (record.__dict__["collection_id"], record.__dict__["status"]) == (
        collection_id,
        "failed",
    )
    image = read_image(sessions, queued_id)
    assert image.status is ImageStatus.FAILED
    assert image.last_error is not None and "worker died" in image.last_error
    assert image.failure_code == "worker.lost"


def test_release_lost_leaves_tries_started_after_the_cutoff(
    sessions: sessionmaker[Session], queued_id: int
) -> None:
    _claim(sessions, queued_id, task_id="t")

    with sessions.begin() as db:
        released = release_lost(db, started_before=datetime.now(UTC) - timedelta(hours=1))

    assert released == (0, 0)
    assert read_image(sessions, queued_id).status is ImageStatus.RUNNING


def _three_running(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> list[int]:
    """Claim three images: two by gpu0 (tasks t0, t1) and one by gpu1 (task t2)."""
    with sessions.begin() as db:
        queue_pending(db, collection_id, 3)
    for number, image_id in enumerate(image_ids[:3]):
        _claim(
            sessions, image_id, worker="gpu1@h" if number == 2 else "gpu0@h", task_id=f"t{number}"
        )
    return image_ids[:3]


def test_release_lost_of_one_worker_leaves_the_other_workers_tries(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    ids = _three_running(sessions, collection_id, image_ids)

    with sessions.begin() as db:
        released = release_lost(db, worker="gpu0@h")

    assert released == (2, 0)
    assert [read_image(sessions, i).status for i in ids] == [
        ImageStatus.PENDING,
        ImageStatus.PENDING,
        ImageStatus.RUNNING,
    ]


def test_release_lost_keeps_the_tries_whose_task_a_live_worker_holds(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    ids = _three_running(sessions, collection_id, image_ids)

    with sessions.begin() as db:
        released = release_lost(db, held_task_ids={"t1"})

    assert released == (2, 0)
    assert read_image(sessions, ids[1]).status is ImageStatus.RUNNING
    with sessions.begin() as db:
        assert held_attempt(db, ids[1], "t1") is not None
        # Another task, or an image no longer running, holds nothing.
        assert held_attempt(db, ids[1], "t0") is None
        assert held_attempt(db, ids[0], "t0") is None
