"""Recovery with real parts: a Redis restart, a killed pool process, a hard time limit.

Each test runs a real Celery worker (the project's app, task and recovery steps; prefork,
one pool process) on PostgreSQL and a private Redis, with a stand-in network that holds
its image while a file exists, so the fault happens while the image is ``running``. The
broker's visibility timeout stays at its default (an hour): anything that waited for it
would fail the test. Each test prints the seconds from the end of the fault to the image
being done again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from recovery_helpers import (
    pool_pids,
    start_worker,
    stop_worker,
    unused_port,
    wait_for,
    worker_command,
    worker_environment,
)
from sqlalchemy import text
from workers_helpers import add_collection, attempts_of, read_image, write_gray_png

from catalog import AttemptOutcome, ImageStatus, make_engine, make_sessionmaker
from migrations import upgrade

# The fault suite's Redis: killed with SIGKILL and started again on the same append-only file.
from tests.faults.fault_services import AofRedis
from workers.app import create_app
from workers.names import COLORIZE
from workers.tasks import time_limit_reason

pytestmark = pytest.mark.slow


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    """A private Redis with an append-only file, on a free port."""
    server = AofRedis(tmp_path / "redis", unused_port())
    server.start()
    yield server
    server.stop()


class _Rig:
    """A PostgreSQL catalog, a hold file, and at most one held worker process.

    Args:
        database_url: The migrated catalog.
        folder: Where the originals, the outputs, the hold file and the log go.
    """

    def __init__(self, database_url: str, folder: Path) -> None:
        self.database_url = database_url
        self.catalog = make_sessionmaker(database_url)
        self.folder = folder
        self.hold = folder / "hold"
        self.hold.touch()
        self.log = folder / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def images(self, names: list[str]) -> dict[str, int]:
        """Write originals and queue them in the collection; return the ids by name."""
        source, output = self.folder / "scans", self.folder / "colour"
        for name in names:
            write_gray_png(source / name)
        return add_collection(self.catalog, source, output, names)

    def command(self, broker_url: str, **options: Any) -> list[str]:
        """The command line of this rig's held worker."""
        return worker_command(broker_url, self.database_url, NODE, self.hold, **options)

    def hold_first(
        self, broker_url: str, names: list[str], **options: Any
    ) -> tuple[dict[str, int], Any]:
        """Start a held worker, let it run the first image, then send the others after it.

        Args:
            broker_url: The broker.
            names: The images; the first one is running when this returns.
            **options: Further options of the worker (``time_limit``).

        Returns:
            The image ids by name, and the producer's app.
        """
        ids = self.images(names)
        self.proc = start_worker(self.command(broker_url, **options), self.log)
        app = create_app(broker_url=broker_url)
        app.send_task(COLORIZE, args=[ids[names[0]]])
        wait_for(lambda: self.status(ids[names[0]]) is ImageStatus.RUNNING, "it to run")
        for name in names[1:]:
            app.send_task(COLORIZE, args=[ids[name]])
        return ids, app

    def status(self, image_id: int) -> ImageStatus:
        """The image's status now."""
        return read_image(self.catalog, image_id).status

    def outcomes(self, image_id: int) -> list[AttemptOutcome | None]:
        """The outcomes of the image's tries, oldest first (None: still open)."""
        return [attempt.outcome for attempt in attempts_of(self.catalog, image_id)]

    def output(self) -> str:
        """What the worker logged."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        if self.proc is not None:
            stop_worker(self.proc)
        self.catalog.kw["bind"].dispose()


#: Node name of the held worker.
NODE = "cpu0@recovery"


@pytest.fixture(scope="module")
def recovery_catalog(postgres_database_factory: Any) -> str:
    """A PostgreSQL catalog migrated once for the module; each rig empties it."""
    url: str = postgres_database_factory()
    upgrade(url)
    return url


@pytest.fixture
def rig(recovery_catalog: str, tmp_path: Path) -> Iterator[_Rig]:
    """An emptied, migrated PostgreSQL catalog and a held worker to start (see ``_Rig``)."""
    engine = make_engine(recovery_catalog)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE collections RESTART IDENTITY CASCADE"))
    engine.dispose()
    made = _Rig(recovery_catalog, tmp_path)
    yield made
    made.close()
    print(made.output()[-6000:])


def test_a_running_image_runs_again_seconds_after_redis_restarts_on_its_aof(
    rig: _Rig, aof_redis: AofRedis
) -> None:
    ids, _ = rig.hold_first(aof_redis.url, ["a.png"])
    image = ids["a.png"]

    aof_redis.kill()
    # Down long enough for the worker to notice (its own restore fails, as in the field).
    wait_for(lambda: "Restoring 1 unacknowledged" in rig.output(), "the worker to notice")
    aof_redis.start()
    # The worker requeues its message through its new connection; the message still
    # names the running image's task, so the worker that gets it takes the image over.
    seconds = wait_for(lambda: len(rig.outcomes(image)) == 2, "the image to be retaken")
    rig.hold.unlink()
    seconds += wait_for(lambda: rig.status(image) is ImageStatus.DONE, "the image done")

    print(f"recovery after a Redis restart: {seconds:.1f} s")
    assert rig.outcomes(image) == [AttemptOutcome.LOST, AttemptOutcome.DONE]
    assert "requeueing 1 message(s)" in rig.output()


def test_the_message_of_a_killed_pool_process_goes_back_to_the_front_of_the_queue(
    rig: _Rig, redis_url: str
) -> None:
    ids, _ = rig.hold_first(redis_url, ["a.png", "b.png"])

    assert rig.proc is not None
    (pool,) = pool_pids(rig.proc.pid)
    os.kill(pool, signal.SIGKILL)
    seconds = wait_for(
        lambda: (
            len(rig.outcomes(ids["a.png"])) == 2
            or rig.status(ids["b.png"]) is not ImageStatus.QUEUED
        ),
        "a or b to be claimed",
    )

    # a's message came back in front of b's, which has waited all along.
    assert rig.outcomes(ids["a.png"]) == [AttemptOutcome.LOST, None]
    assert rig.status(ids["b.png"]) is ImageStatus.QUEUED
    rig.hold.unlink()
    seconds += wait_for(lambda: rig.status(ids["a.png"]) is ImageStatus.DONE, "a done")
    print(f"recovery after a pool process was killed: {seconds:.1f} s")
    wait_for(lambda: rig.status(ids["b.png"]) is ImageStatus.DONE, "b done")


def test_a_batch_whose_pool_process_is_killed_is_taken_over_by_its_message(
    rig: _Rig, redis_url: str
) -> None:
    names = ["a.png", "b.png", "c.png", "d.png"]
    ids = rig.images(names)
    rig.proc = start_worker(rig.command(redis_url, batch=3), rig.log)
    app = create_app(broker_url=redis_url)
    app.send_task(COLORIZE, args=[ids["a.png"]])
    batch = [ids[name] for name in names[:3]]
    wait_for(lambda: {rig.status(i) for i in batch} == {ImageStatus.RUNNING}, "the batch")

    assert rig.proc is not None
    (pool,) = pool_pids(rig.proc.pid)
    os.kill(pool, signal.SIGKILL)
    seconds = wait_for(lambda: len(rig.outcomes(ids["c.png"])) == 2, "the batch taken over")
    rig.hold.unlink()
    seconds += wait_for(
        lambda: {rig.status(i) for i in batch} == {ImageStatus.DONE}, "the batch done"
    )

    print(f"recovery of a batch after its pool process was killed: {seconds:.1f} s")
    for image_id in batch:
        assert rig.outcomes(image_id) == [AttemptOutcome.LOST, AttemptOutcome.DONE]
    # The fourth image was never sent: nothing took it.
    assert rig.status(ids["d.png"]) is ImageStatus.QUEUED


def test_an_image_past_the_hard_time_limit_is_failed_and_the_collection_goes_on(
    rig: _Rig, redis_url: str
) -> None:
    names = ["stuck.png", "next.png"]
    ids, _ = rig.hold_first(redis_url, names, time_limit=4.0)

    wait_for(lambda: rig.status(ids["stuck.png"]) is ImageStatus.FAILED, "the kill")
    rig.hold.unlink()
    wait_for(lambda: rig.status(ids["next.png"]) is ImageStatus.DONE, "the next image")

    stuck = read_image(rig.catalog, ids["stuck.png"])
    assert stuck.last_error == time_limit_reason(4.0)
    assert stuck.failure_code == "time_limit"
    assert rig.outcomes(ids["stuck.png"]) == [AttemptOutcome.FAILED]
    # Acknowledged, not redelivered: nothing is left for the worker to take.
    assert "Hard time limit (4.0s) exceeded" in rig.output()


def test_a_batch_past_the_hard_time_limit_fails_the_images_of_its_forward(
    rig: _Rig, redis_url: str
) -> None:
    ids = rig.images(["a.png", "b.png", "c.png"])
    rig.proc = start_worker(rig.command(redis_url, time_limit=4.0, batch=2), rig.log)
    create_app(broker_url=redis_url).send_task(COLORIZE, args=[ids["a.png"]])
    batch = [ids["a.png"], ids["b.png"]]

    wait_for(lambda: {rig.status(i) for i in batch} == {ImageStatus.FAILED}, "the kill")

    # The pool process named both images of its forward before it was killed.
    for image_id in batch:
        image = read_image(rig.catalog, image_id)
        assert image.last_error == time_limit_reason(4.0, 2)
        assert rig.outcomes(image_id) == [AttemptOutcome.FAILED]
    assert rig.status(ids["c.png"]) is ImageStatus.QUEUED


def _worker_pid(parent: int) -> int:
    """The pid of the held worker that the supervisor in this process started."""
    (pid,) = [
        child
        for child in pool_pids(parent)
        if "recovery_helpers.py" in Path(f"/proc/{child}/cmdline").read_text(errors="replace")
    ]
    return pid


def test_a_supervised_node_killed_with_its_group_has_its_image_released_and_done_again(
    rig: _Rig, redis_url: str
) -> None:
    from scheduler import celery_sender, dispatch
    from workers.launcher import ChildSpec, Supervisor
    from workers.releaser import NodeReleaser

    image = rig.images(["a.png"])["a.png"]
    releaser = NodeReleaser(rig.database_url)
    spec = ChildSpec(NODE, tuple(rig.command(redis_url)), worker_environment())
    supervisor = Supervisor([spec], release=releaser)
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    app = create_app(broker_url=redis_url)
    send = celery_sender(app)
    try:
        app.send_task(COLORIZE, args=[image])
        wait_for(lambda: rig.status(image) is ImageStatus.RUNNING, "the image to run")

        os.killpg(_worker_pid(os.getpid()), signal.SIGKILL)
        # Released as the supervisor saw its worker die: the dispatcher sends it again.
        seconds = wait_for(lambda: rig.status(image) is ImageStatus.PENDING, "release")
        rig.hold.unlink()
        seconds += wait_for(
            lambda: rig.status(image) is ImageStatus.DONE,
            "the image done again",
            every=lambda: dispatch(rig.catalog, send, max_in_flight=10),
        )
    finally:
        supervisor.request_stop(cold=True)
        thread.join(timeout=60)
        releaser.close()

    print(f"recovery after a node was killed: {seconds:.1f} s")
    assert rig.outcomes(image) == [AttemptOutcome.LOST, AttemptOutcome.DONE]


def test_the_reaper_hands_back_only_what_no_live_worker_holds(rig: _Rig, redis_url: str) -> None:
    from catalog import claim_image, transaction
    from scheduler.reaping import reap

    ids, app = rig.hold_first(redis_url, ["live.png"])
    ids.update(rig.images(["ghost.png", "parked.png"]))
    # A try whose worker vanished with its message acknowledged (nothing will come back).
    with transaction(rig.catalog) as db:
        claim_image(db, ids["ghost.png"], worker="gpu3@gone", task_id="ghost-task")
    # A message delivered to a worker that is gone: kombu's record of it, ten minutes old
    # (within the visibility timeout, so only the reaper may put it back).
    app.send_task(COLORIZE, args=[ids["parked.png"]], task_id="parked-task")
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.rpop("colorize")
        assert isinstance(raw, bytes)
        message = json.loads(raw)
        tag = message["properties"]["delivery_tag"]
        client.hset("unacked", tag, json.dumps([message, "colorize", "colorize"]))
        client.zadd("unacked_index", {tag: time.time() - 600})
        with transaction(rig.catalog) as db:
            claim_image(db, ids["parked.png"], worker="gpu3@gone", task_id="parked-task")

        suspects: set[str] = set()
        # The live worker must answer each pass: on two busy cores its reply to the
        # broadcast missed the reaper's 1 s default in a whole-suite run (that pass then
        # rightly hands back nothing and suspects nothing). A pass waits this long in all.
        answer_within = 5.0
        first = reap(app, rig.catalog, grace=0.0, suspects=suspects, timeout=answer_within)
        # Nothing is handed back before a second pass finds nobody holding it either.
        assert (first.restored, first.released.requeued) == (0, 0)
        assert suspects == {"ghost-task", "parked-task"}
        report = reap(app, rig.catalog, grace=0.0, suspects=suspects, timeout=answer_within)

        assert NODE in report.answered
        assert (report.restored, report.released.requeued) == (1, 1)
        # The live worker's image is untouched; the ghost goes back to pending; the
        # parked message is next in line, and takes its image over when delivered.
        assert rig.outcomes(ids["live.png"]) == [None]
        assert rig.status(ids["ghost.png"]) is ImageStatus.PENDING
        assert rig.outcomes(ids["ghost.png"]) == [AttemptOutcome.LOST]
        assert rig.status(ids["parked.png"]) is ImageStatus.RUNNING
        assert json.loads(client.lindex("colorize", -1) or b"{}")["headers"]["id"] == (
            "parked-task"
        )
        assert client.hlen("unacked") == 1  # the live worker's own delivery
    finally:
        client.close()
    rig.hold.unlink()
    wait_for(lambda: rig.status(ids["parked.png"]) is ImageStatus.DONE, "parked done")
    assert rig.outcomes(ids["parked.png"]) == [AttemptOutcome.LOST, AttemptOutcome.DONE]
