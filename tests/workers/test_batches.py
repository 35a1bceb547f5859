"""process_batch(): several images of a collection, one claim, one forward, each its own record."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from torch import nn
from workers_helpers import (
    ObservedStorage,
    StubNet,
    add_collection,
    attempts_of,
    read_image,
    stub_colorizer,
    write_corrupt_png,
    write_gray16_tiff,
    write_gray_png,
)

from catalog import (
    AttemptOutcome,
    DatabaseUnavailable,
    ImageStatus,
    claim_image,
    claim_more,
    mark_failed,
    queue_pending,
    transaction,
)
from storage import LocalStorage, StorageUnavailable
from workers import finishing
from workers.batches import process_batch
from workers.embedded import process_many
from workers.outcomes import Outcome, ProcessStatus
from workers.process import process_image
from workers.readahead import ReadAhead
from workers.time_limits import record_time_limit, time_limit_reason

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = "cpu0@test"


class _Batches(nn.Module):
    """Records each forward's batch and side; runs out of memory as told.

    Args:
        max_batch: Batches larger than this run out of memory (at any size).
        max_single: A single image larger than this many pixels runs out of memory.
        stop_forward: Raise this from the first forward.
    """

    def __init__(
        self,
        *,
        max_batch: int | None = None,
        max_single: int | None = None,
        stop_forward: BaseException | None = None,
    ) -> None:
        super().__init__()
        self.inner = StubNet()
        self.max_batch = max_batch
        self.max_single = max_single
        self.stop_forward = stop_forward
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, side = int(x.shape[0]), int(x.shape[-1])
        self.calls.append((batch, side))
        if self.stop_forward is not None:
            raise self.stop_forward
        if self.max_batch is not None and batch > self.max_batch:
            raise torch.OutOfMemoryError(f"injected: a batch of {batch}")
        if self.max_single is not None and side > self.max_single:
            raise torch.OutOfMemoryError(f"injected: {side} px")
        out: torch.Tensor = self.inner(x)
        return out


def _batch(
    sessions: sessionmaker[Session], ids: list[int], model: nn.Module, **options: Any
) -> list[Outcome]:
    settings: dict[str, Any] = {
        "sessions": sessions,
        "storage_for": lambda uri: LocalStorage(),
        "colorizer": stub_colorizer(model),
        "worker": WORKER,
    }
    settings.update(options)
    return process_batch(ids, **settings)


def _many(sessions: sessionmaker[Session], ids: list[int], **options: Any) -> list[Outcome]:
    settings: dict[str, Any] = {
        "sessions": sessions,
        "storage_for": lambda uri: LocalStorage(),
        "colorizer": stub_colorizer(_Batches()),
        "worker": WORKER,
        "prefetch": 2,
        "batch": 2,
    }
    settings.update(options)
    return process_many(ids, **settings)


def _collection(
    sessions: sessionmaker[Session], source: Path, output: Path, count: int, **settings: Any
) -> list[int]:
    """Queue ``count`` small originals of different shapes and depths; return their ids."""
    names = []
    for index in range(count):
        name = f"p{index}.{'tif' if index % 3 == 2 else 'png'}"
        shape = (56 + 8 * index, 40 + 4 * index)
        if name.endswith(".tif"):
            write_gray16_tiff(source / name, size=shape)
        else:
            write_gray_png(source / name, size=shape)
        names.append(name)
    ids = add_collection(sessions, source, output, names, **settings)
    return [ids[name] for name in names]


def test_a_batch_runs_one_forward_and_records_each_image_as_a_single_one_would_be(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 4)
    model = _Batches()

    outcomes = _batch(sessions, ids, model, task_id="m-1")

    assert model.calls == [(4, 256)]
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 4
    for image_id in ids:
        row = read_image(sessions, image_id)
        assert (row.status, row.input_size, row.sizes_tried) == (ImageStatus.DONE, 256, [256])
        assert (row.task_id, row.worker_host) == ("m-1", WORKER)
        [attempt] = attempts_of(sessions, image_id)
        assert (attempt.outcome, attempt.input_size) == (AttemptOutcome.DONE, 256)
        assert Path(str(row.output_uri)).exists()


def test_a_corrupt_original_in_a_batch_fails_alone(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    write_corrupt_png(source / "broken.png")
    write_gray_png(source / "c.png", size=(30, 70))
    ids = add_collection(sessions, source, output, ["a.png", "broken.png", "c.png"])
    model = _Batches()

    outcomes = _batch(sessions, [ids["a.png"], ids["broken.png"], ids["c.png"]], model)

    assert [o.status for o in outcomes] == [
        ProcessStatus.DONE,
        ProcessStatus.FAILED,
        ProcessStatus.DONE,
    ]
    assert model.calls == [(2, 256)]
    broken = read_image(sessions, ids["broken.png"])
    assert "truncated or corrupt" in (broken.last_error or "")
    assert [a.outcome for a in attempts_of(sessions, ids["broken.png"])] == [AttemptOutcome.FAILED]
    assert (output / "a.png").exists() and (output / "c.png").exists()
    assert not (output / "broken.png").exists()


def test_out_of_memory_splits_the_batch_then_moves_each_image_down_with_its_own_attempts(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3, input_size=512)
    model = _Batches(max_batch=1, max_single=384)

    outcomes = _batch(sessions, ids, model)

    assert model.calls[:2] == [(3, 512), (2, 512)]  # split first, at the same size
    assert sorted(model.calls) == sorted([(3, 512), (2, 512)] + [(1, 512), (1, 384)] * 3)
    assert [o.sizes_tried for o in outcomes] == [(512, 384)] * 3
    assert [o.out_of_memory_steps for o in outcomes] == [1, 1, 1]
    for image_id in ids:
        row = read_image(sessions, image_id)
        assert (row.status, row.input_size, row.sizes_tried) == (ImageStatus.DONE, 384, [512, 384])
        retry, done = attempts_of(sessions, image_id)
        assert (retry.outcome, retry.input_size) == (AttemptOutcome.OOM_RETRY, 512)
        assert (done.outcome, done.input_size) == (AttemptOutcome.DONE, 384)


def test_a_store_that_cannot_be_reached_hands_the_whole_batch_back(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3)
    down = ObservedStorage(unavailable=lambda uri: uri.endswith("p1.png"))

    with pytest.raises(StorageUnavailable):
        _batch(sessions, ids, _Batches(), storage_for=lambda uri: down)

    for image_id in ids:
        assert read_image(sessions, image_id).status is ImageStatus.QUEUED
        [attempt] = attempts_of(sessions, image_id)
        assert attempt.outcome is AttemptOutcome.FAILED
        assert (attempt.error or "").startswith("will retry:")


def test_a_message_claims_more_queued_images_and_their_own_messages_find_them_done(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, 5)
    model = _Batches()

    outcomes = _batch(sessions, [ids[1]], model, more=2, task_id="m-1")

    # The message's image first, then the lowest queued ones.
    assert [o.image_id for o in outcomes] == [ids[1], ids[0], ids[2]]
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 3
    assert model.calls == [(3, 256)]
    assert {read_image(sessions, i).task_id for i in (ids[0], ids[1], ids[2])} == {"m-1"}
    for image_id in (ids[0], ids[2]):  # their messages come later: nothing to do
        later = process_image(
            image_id,
            sessions=sessions,
            storage_for=lambda uri: LocalStorage(),
            colorizer=stub_colorizer(model),
            worker=WORKER,
            task_id=f"m-{image_id}",
        )
        assert later.status is ProcessStatus.NOT_CLAIMED
    assert model.calls == [(3, 256)]
    assert [read_image(sessions, i).status for i in ids[3:]] == [ImageStatus.QUEUED] * 2
    assert all(len(attempts_of(sessions, i)) == 1 for i in ids[:3])


def test_a_message_prefers_the_images_read_ahead(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, 5)
    with transaction(sessions) as db:
        first = claim_image(db, ids[0], worker=WORKER, task_id="m-0")
        assert first is not None
        more = claim_more(db, first, 2, worker=WORKER, task_id="m-0", prefer=[ids[4], ids[3]])
    assert [claim.image_id for claim in more] == [ids[3], ids[4]]


def test_a_redelivered_message_takes_its_whole_batch_over(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, 4)
    with transaction(sessions) as db:  # a worker claimed a batch of three, then died
        first = claim_image(db, ids[0], worker="gpu0@gone", task_id="m-0")
        assert first is not None
        claim_more(db, first, 2, worker="gpu0@gone", task_id="m-0")
    model = _Batches()

    outcomes = _batch(sessions, [ids[0]], model, more=2, task_id="m-0")

    assert [o.image_id for o in outcomes] == ids[:3]
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 3
    for image_id in ids[:3]:
        lost, done = attempts_of(sessions, image_id)
        assert (lost.outcome, done.outcome) == (AttemptOutcome.LOST, AttemptOutcome.DONE)
    assert read_image(sessions, ids[3]).status is ImageStatus.QUEUED


def test_a_message_that_comes_again_after_its_image_was_done_takes_over_the_rest(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3)
    with transaction(sessions) as db:  # the worker finished the first image, then died
        first = claim_image(db, ids[0], worker="gpu0@gone", task_id="m-0")
        assert first is not None
        claim_more(db, first, 2, worker="gpu0@gone", task_id="m-0")
        assert mark_failed(db, ids[0], first.attempt_id, "finished", code="unknown")

    outcomes = _batch(sessions, [ids[0]], _Batches(), more=2, task_id="m-0")

    assert [o.status for o in outcomes] == [ProcessStatus.NOT_CLAIMED] + [ProcessStatus.DONE] * 2
    for image_id in ids[1:]:
        assert [a.outcome for a in attempts_of(sessions, image_id)] == [
            AttemptOutcome.LOST,
            AttemptOutcome.DONE,
        ]


def test_at_the_soft_time_limit_the_image_at_work_fails_and_the_rest_goes_back(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3)
    slow = ObservedStorage(unavailable=lambda uri: uri.endswith("p1.png"))
    slow.error = SoftTimeLimitExceeded()
    model = _Batches()

    outcomes = _batch(sessions, ids, model, storage_for=lambda uri: slow)

    assert [o.status for o in outcomes] == [
        ProcessStatus.RELEASED,
        ProcessStatus.FAILED,
        ProcessStatus.RELEASED,
    ]
    assert model.calls == []
    stuck = read_image(sessions, ids[1])
    assert (stuck.status, stuck.failure_code) == (ImageStatus.FAILED, "time_limit")
    for image_id in (ids[0], ids[2]):
        assert read_image(sessions, image_id).status is ImageStatus.PENDING


def test_at_the_soft_time_limit_in_the_forward_every_image_of_it_fails(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 2)

    outcomes = _batch(sessions, ids, _Batches(stop_forward=SoftTimeLimitExceeded()))

    assert [o.status for o in outcomes] == [ProcessStatus.FAILED] * 2
    for image_id in ids:
        row = read_image(sessions, image_id)
        assert row.failure_code == "time_limit" and "while colorizing" in (row.last_error or "")


def test_past_the_hard_time_limit_the_images_at_work_fail_and_the_others_go_back(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3)
    with transaction(sessions) as db:
        first = claim_image(db, ids[0], worker=WORKER, task_id="m-0")
        assert first is not None
        claim_more(db, first, 2, worker=WORKER, task_id="m-0")

    assert record_time_limit(sessions, ids[0], "m-0", 30.0, at_work=[ids[1]], batch=3)

    stuck = read_image(sessions, ids[1])
    assert (stuck.status, stuck.last_error) == (ImageStatus.FAILED, time_limit_reason(30.0, 3))
    for image_id in (ids[0], ids[2]):
        assert read_image(sessions, image_id).status is ImageStatus.PENDING
        [attempt] = attempts_of(sessions, image_id)
        assert attempt.outcome is AttemptOutcome.FAILED


def test_process_many_colorizes_in_batches_reading_the_next_one_ahead(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 5)
    model = _Batches()
    seen: list[Outcome] = []

    outcomes = _many(sessions, ids, colorizer=stub_colorizer(model), on_outcome=seen.append)

    assert model.calls == [(2, 256), (2, 256), (1, 256)]
    assert [o.image_id for o in outcomes] == ids and seen == outcomes
    assert {o.status for o in outcomes} == {ProcessStatus.DONE}
    assert any(o.read_ahead for o in outcomes[2:])


def test_a_runtime_batches_as_configured_or_by_its_device(catalog_url: str) -> None:
    from workers.runtime import DEFAULT_CPU_BATCH, WorkerConfig, WorkerRuntime

    def runtime(**config: Any) -> WorkerRuntime:
        settings = WorkerConfig(database_url=catalog_url, untrained=True, **config)
        return WorkerRuntime(settings, colorizer_factory=lambda _: stub_colorizer())

    assert runtime(device="cpu").batch_size() == DEFAULT_CPU_BATCH
    assert runtime(device="cpu", batch_size=5).batch_size() == 5
    with pytest.raises(ValueError, match="batch_size"):
        WorkerConfig(database_url=catalog_url, untrained=True, batch_size=0)


def _count_transactions(sessions: sessionmaker[Session]) -> list[str]:
    """Record every transaction the catalog commits from now on (one entry each)."""
    commits: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(engine, "commit", lambda connection: commits.append("commit"))
    return commits


@pytest.mark.parametrize("size", [1, 4])
def test_a_batch_costs_the_catalog_three_transactions_whatever_its_size(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path, size: int
) -> None:
    # Claim (with the read-ahead's look at the next images), the intents to write, and
    # done (with the thumbnails): per image of a batch of 4, under one transaction.
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, size + 2)
    read_ahead = ReadAhead(lambda uri: LocalStorage(), guess_next=True)
    commits = _count_transactions(sessions)
    try:
        outcomes = _batch(
            sessions, [ids[0]], _Batches(), more=size - 1, task_id="m-1", read_ahead=read_ahead
        )
        assert len(commits) == 3
        # What the transactions saved still happened: the next images are being read...
        assert read_ahead.waiting() == ids[size : 2 * size][:2]
    finally:
        read_ahead.close()
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * size
    for image_id in ids[:size]:
        image = read_image(sessions, image_id)
        # ...and each image has its provenance, its thumbnails and one attempt.
        assert image.output_sha256 and image.source_thumb_uri and image.output_thumb_uri
        assert Path(image.output_uri.removeprefix("file://")).is_file()
        [attempt] = attempts_of(sessions, image_id)
        assert attempt.outcome is AttemptOutcome.DONE


def test_a_claim_is_six_statements_the_intent_two_and_done_three(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    # The claim (update the image, open its try), the job (its collection, its row, where
    # the collections' originals are) and the next queued images for the read-ahead:
    # nothing looked up twice (the collection was, twice more, before).
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, 3)
    read_ahead = ReadAhead(lambda uri: LocalStorage(), guess_next=True)
    statements: list[list[str]] = [[]]
    engine = sessions.kw["bind"]

    def executed(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split()
        if words[0] != "BEGIN":  # SQLite's own
            statements[-1].append(" ".join(words[:2] if words[0] != "SELECT" else words[1:2]))

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", lambda connection: statements.append([]))
    try:
        outcomes = _batch(sessions, [ids[0]], _Batches(), task_id="m-1", read_ahead=read_ahead)
        assert read_ahead.waiting() == [ids[1]]
    finally:
        read_ahead.close()
        event.remove(engine, "before_cursor_execute", executed)
    assert [o.status for o in outcomes] == [ProcessStatus.DONE]
    claim = statements[0]
    assert claim == [
        "UPDATE images",
        "INSERT INTO",
        "collections.id,",  # the image's collection
        "images.id,",  # the image
        "collections.id,",  # every collection's roots: the copy is nobody's original
        "images.id,",  # the next queued images, for the read-ahead
    ], claim
    # The intent: the digest on the try, then the image's own digests in one SELECT.
    intents = statements[1]
    assert intents == ["UPDATE attempts", "attempts.output_sha256"], statements
    # Done: the try that holds the image, then one UPDATE of the image (its provenance
    # and its thumbnails: they were a statement of their own before) and of the try.
    done = statements[2]
    assert done == ["attempts.image_id,", "UPDATE images", "UPDATE attempts"], statements


def test_a_catalog_outage_when_recording_a_batch_done_hands_it_all_back(
    sessions: sessionmaker[Session], source: Path, output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _collection(sessions, source, output, 3)

    def down(*args: Any, **kwargs: Any) -> bool:
        raise DatabaseUnavailable("injected: the catalog went away")

    with monkeypatch.context() as patch:
        patch.setattr(finishing, "mark_done", down)
        with pytest.raises(DatabaseUnavailable):
            _batch(sessions, ids, _Batches())
    for image_id in ids:
        assert read_image(sessions, image_id).status is ImageStatus.QUEUED
        [attempt] = attempts_of(sessions, image_id)
        assert (attempt.error or "").startswith("will retry:")

    # The copies written before the outage are the images' own: the retry replaces them.
    outcomes = _batch(sessions, ids, _Batches())
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 3


def test_a_foreign_file_at_one_output_fails_that_image_alone(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 3)
    foreign = output / "p1.png"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"somebody's file")

    outcomes = _batch(sessions, ids, _Batches())

    assert [o.status for o in outcomes] == [
        ProcessStatus.DONE,
        ProcessStatus.FAILED,
        ProcessStatus.DONE,
    ]
    assert "is not a file panchro wrote" in (outcomes[1].reason or "")
    assert foreign.read_bytes() == b"somebody's file"


def test_a_run_records_a_batch_done_and_claims_the_next_in_one_transaction(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    sessions = catalog_sessions
    ids = _collection(sessions, source, output, 6)
    commits = _count_transactions(sessions)

    outcomes = _many(sessions, ids)

    # The first batch: claim, intents, done + next claim; then intents, done + next claim.
    assert len(commits) == 3 + 2 + 2
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 6
    assert any(o.read_ahead for o in outcomes[2:])
    for image_id in ids:
        [attempt] = attempts_of(sessions, image_id)
        assert attempt.outcome is AttemptOutcome.DONE
        assert read_image(sessions, image_id).source_thumb_uri


def test_ctrl_c_hands_back_the_next_batch_claimed_ahead(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 6)

    def stop(outcome: Outcome) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _many(sessions, ids, on_outcome=stop)

    # The first batch was recorded done in the transaction that claimed the second...
    assert [read_image(sessions, i).status for i in ids[:2]] == [ImageStatus.DONE] * 2
    # ...which goes back, its tries closed with the reason; the rest was never touched.
    for image_id in ids[2:4]:
        assert read_image(sessions, image_id).status is ImageStatus.PENDING
        [attempt] = attempts_of(sessions, image_id)
        assert attempt.outcome is AttemptOutcome.FAILED
        assert "the run stopped before its turn" in (attempt.error or "")
    assert [read_image(sessions, i).status for i in ids[4:]] == [ImageStatus.QUEUED] * 2
    assert all(attempts_of(sessions, i) == [] for i in ids[4:])

    # Nothing is lost: queued again as the next round of the run queues them, they finish.
    with transaction(sessions) as db:
        again = queue_pending(db, read_image(sessions, ids[2]).collection_id, 10)
    assert again == ids[2:4]
    outcomes = _many(sessions, again)
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux gives threads a nice value")
def test_read_ahead_threads_run_below_the_models_priority(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _collection(sessions, source, output, 2)
    seen: list[tuple[str, int]] = []

    def storage_for(uri: str) -> LocalStorage:
        thread = threading.current_thread()
        seen.append((thread.name, os.getpriority(os.PRIO_PROCESS, thread.native_id or 0)))
        return LocalStorage()

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    read_ahead = ReadAhead(storage_for)
    try:
        with transaction(sessions) as db:
            read_ahead.prefetch_in(db, [ids[1]])
        _batch(sessions, ids, _Batches(), read_ahead=read_ahead, storage_for=storage_for)
    finally:
        read_ahead.close()
    ahead = {nice for name, nice in seen if name.startswith("read-ahead")}
    assert ahead == {min(mine + 10, 19)}
    assert {nice for name, nice in seen if not name.startswith("read-ahead")} == {mine}
