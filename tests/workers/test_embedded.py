"""The embedded worker of ``panchro run`` on a real SQLite catalog and local folders."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    InterruptOnForward,
    ObservedStorage,
    StubNet,
    WaitsOnFirstForward,
    add_collection,
    attempts_of,
    read_image,
    stub_colorizer,
    write_gray_png,
)

from catalog import AttemptOutcome, ImageStatus, claim_image, transaction
from storage import LocalStorage
from workers.embedded import EmbeddedWorker, process_many
from workers.process import Outcome, ProcessStatus
from workers.runtime import WorkerConfig, WorkerRuntime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = "cpu0@test"
#: The originals of every test here, in processing order.
NAMES = ["a.png", "b.png", "c.png"]


def _queued_images(sessions: sessionmaker[Session], source: Path, output: Path) -> dict[str, int]:
    """Write the originals and queue them as one collection; return their image ids."""
    for name in NAMES:
        write_gray_png(source / name)
    return add_collection(sessions, source, output, NAMES)


def test_embedded_worker_hands_back_an_interrupted_run_then_colorizes_all_in_rounds(
    catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _queued_images(sessions, source, output)
    with transaction(sessions) as db:  # a run stopped dead while b.png was running
        assert claim_image(db, ids["b.png"], worker=WORKER, device="cpu")
    collection_id = read_image(sessions, ids["a.png"]).collection_id
    runtime = WorkerRuntime(
        WorkerConfig(database_url=catalog_url, untrained=True, device="cpu", node_name=WORKER),
        colorizer_factory=lambda _: stub_colorizer(),
    )
    worker = EmbeddedWorker(runtime, prefetch=1, round_size=2)
    seen: list[Outcome] = []

    try:
        handed_back = worker.recover(collection_id)
        worker.work(collection_id, on_outcome=seen.append)
    finally:
        runtime.close()

    assert handed_back == 3
    assert [outcome.image_id for outcome in seen] == [ids[name] for name in NAMES]
    assert {outcome.status for outcome in seen} == {ProcessStatus.DONE}
    assert [outcome.read_ahead for outcome in seen] == [False, True, False]  # rounds of 2
    assert all((output / name).exists() for name in NAMES)
    [lost, done] = attempts_of(sessions, ids["b.png"])
    assert (lost.outcome, done.outcome) == (AttemptOutcome.LOST, AttemptOutcome.DONE)


def test_process_many_reads_the_next_original_while_the_model_runs(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _queued_images(sessions, source, output)
    second_read = threading.Event()

    def on_read(uri: str, thread: str) -> None:
        if uri.endswith("b.png") and thread != threading.main_thread().name:
            second_read.set()

    store = ObservedStorage(on_read=on_read)
    model = WaitsOnFirstForward(StubNet(), second_read)

    outcomes = process_many(
        [ids[name] for name in NAMES],
        sessions=sessions,
        storage_for=lambda uri: store,
        colorizer=stub_colorizer(model),
        worker=WORKER,
        prefetch=2,
    )

    assert model.event_seen == [True], "b.png was not read while a.png was in the model"
    assert [o.status for o in outcomes] == [ProcessStatus.DONE] * 3
    assert [o.read_ahead for o in outcomes] == [False, True, True]
    assert sorted(uri.rsplit("/", 1)[-1] for uri, _ in store.reads) == NAMES  # once each


def test_process_many_hands_the_current_image_back_when_interrupted(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    ids = _queued_images(sessions, source, output)

    with pytest.raises(KeyboardInterrupt):
        process_many(
            [ids[name] for name in NAMES],
            sessions=sessions,
            storage_for=lambda uri: LocalStorage(),
            colorizer=stub_colorizer(InterruptOnForward(StubNet(), when=2)),
            worker=WORKER,
        )

    statuses = [read_image(sessions, ids[name]).status for name in NAMES]
    assert statuses == [ImageStatus.DONE, ImageStatus.PENDING, ImageStatus.QUEUED]
    [interrupted] = attempts_of(sessions, ids["b.png"])
    assert interrupted.outcome is AttemptOutcome.FAILED and interrupted.finished_at is not None
    assert read_image(sessions, ids["b.png"]).task_id is None
