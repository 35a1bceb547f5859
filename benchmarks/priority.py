"""How long an urgent collection waits behind a big one, and how fast submit still registers.

Part 1, overtaking. Real Celery workers (``celery worker`` with the launcher's arguments,
one prefork process each) run a stand-in colorize task: it claims its image as the real
task does (``queued -> running``), records when it started, and sleeps ``--task-seconds``
in place of the model (no image is read or written). A scheduler loop in this process
runs a dispatch pass every ``--interval`` seconds with ``--max-in-flight`` (200 by
default, as ``panchro scheduler``). A ``--bulk`` collection (1,000 images, priority 0)
is submitted first; once the workers are busy and the queue holds ``max_in_flight``
messages, an ``--urgent`` collection (6 images, priority 9) is submitted with
``scheduler.submit()``. Measured: seconds from the start of that submission to the start
of its first image and of its last one, and how many bulk images started in between.

Two modes, on fresh catalogs and an emptied broker each:

- ``priorities``: what panchro sends, each message with its collection's priority;
- ``one list``: every message with the same priority, as before: the urgent images wait
  behind every message queued before them.

Part 2, submission speed: ``benchmarks/submit.py``'s end-to-end run of ``submit()`` on a
local folder of ``--files`` files, sending every image and with max-in-flight 200.

Usage::

    python benchmarks/priority.py                 # about two minutes on 2 cores
    python benchmarks/priority.py --workers 4 --task-seconds 0.5 --files 50000

``PANCHRO_BENCH_DATABASE_URL`` names a PostgreSQL database whose role may create
databases (default: the local ``test`` database). ``PANCHRO_BENCH_BROKER_URL`` names a
Redis database that the benchmark may empty; unset, the benchmark starts a private
``redis-server`` on a free port.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from bench_servers import fresh_database, private_redis, wait_for
from sqlalchemy.orm import Session, sessionmaker
from submit import (
    DEFAULT_DATABASE_URL,
    PRODUCTION_MAX_IN_FLIGHT,
    SERVER_START_S,
    _end_to_end,
    _write_local_source,
)

from catalog import claim_image, count_in_flight, make_sessionmaker, transaction
from scheduler import TaskRequest, celery_sender, dispatch, submit
from scheduler.dispatching import Send
from scheduler.flight import announce_max_in_flight
from storage.registry import open_storage
from workers.app import create_app
from workers.commandline import worker_argv
from workers.names import COLORIZE

#: Redis list of task starts, one JSON record ``{"image", "collection", "t"}`` each.
STARTS_KEY = "bench:starts"
#: Content of every source file: the start of a JPEG, enough for the scan to take it.
JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(60)
#: Seconds the urgent collection may wait before the trial gives up.
TRIAL_LIMIT_S = 300.0


@dataclass(frozen=True)
class Trial:
    """What one mode measured."""

    mode: str
    first_s: float
    last_s: float
    bulk_between: int
    queued_ahead: int


def run_worker(broker_url: str, database_url: str, node: str, task_seconds: float) -> None:
    """A worker process: the stand-in colorize task under the real task name."""
    app = create_app(broker_url=broker_url)
    sessions = make_sessionmaker(database_url)
    client = redis.Redis.from_url(broker_url)

    @app.task(name=COLORIZE, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def colorize(self: Any, image_id: int) -> None:
        with transaction(sessions) as db:
            claim = claim_image(db, image_id, worker=node, task_id=self.request.id)
        if claim is None:
            return
        record = {"image": image_id, "collection": claim.collection_id, "t": time.time()}
        client.rpush(STARTS_KEY, json.dumps(record))
        time.sleep(task_seconds)  # the model

    app.worker_main(argv=worker_argv(node, loglevel="WARNING"))


@contextmanager
def _workers(
    count: int, broker_url: str, database_url: str, task_seconds: float, logs: Path
) -> Iterator[None]:
    procs = []
    for index in range(count):
        node = f"bench{index}@priority"
        command = [
            sys.executable,
            __file__,
            "--worker",
            broker_url,
            database_url,
            node,
            str(task_seconds),
        ]
        with open(logs / f"worker{index}.log", "ab") as out:
            procs.append(
                subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    try:
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def _scheduler(
    app: Any, sessions: sessionmaker[Session], send: Send, max_in_flight: int, interval: float
) -> Iterator[None]:
    """The dispatch loop of ``panchro scheduler``, without the reaper (nothing is lost)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            announce_max_in_flight(app, max_in_flight, interval=interval)
            dispatch(sessions, send, max_in_flight=max_in_flight)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="bench-scheduler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _one_list(send: Send) -> Send:
    """A sender that gives every message the same priority, as panchro did before."""

    def same_priority(requests: Sequence[TaskRequest]) -> None:
        send([dataclasses.replace(request, priority=0) for request in requests])

    return same_priority


def _write_source(root: Path, count: int) -> str:
    root.mkdir(parents=True)
    for index in range(count):
        (root / f"scan{index:05d}.jpg").write_bytes(JPEG_BYTES)
    return str(root)


def _starts(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(STARTS_KEY, 0, -1)]


def run_trial(
    mode: str, args: argparse.Namespace, admin_url: str, broker_url: str, tmp: Path
) -> Trial:
    """Submit the bulk collection, then the urgent one, and time the urgent one's starts."""
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    bulk_source = _write_source(tmp / mode / "bulk", args.bulk)
    urgent_source = _write_source(tmp / mode / "urgent", args.urgent)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(admin_url))
        sessions = make_sessionmaker(database_url)
        app = create_app(broker_url=broker_url)
        send = celery_sender(app)
        if mode == "one list":
            send = _one_list(send)

        def submit_collection(name: str, source: str, priority: int) -> Any:
            from scheduler import CollectionSettings

            return submit(
                sessions,
                name=name,
                source=source,
                output=str(tmp / mode / f"{name}-colour"),
                storage=open_storage(source),
                send=send,
                max_in_flight=args.max_in_flight,
                settings=CollectionSettings(priority=priority),
                case_insensitive=False,
            )

        bulk = submit_collection("bulk", bulk_source, 0)
        stack.enter_context(
            _workers(args.workers, broker_url, database_url, args.task_seconds, tmp)
        )
        stack.enter_context(_scheduler(app, sessions, send, args.max_in_flight, args.interval))
        # The workers are busy and the queue is full, as in production.
        wait_for(lambda: len(_starts(client)) >= 2 * args.workers, "the workers", 120.0)
        with transaction(sessions) as db:
            queued_ahead = count_in_flight(db)
        began = time.time()
        urgent = submit_collection("urgent", urgent_source, 9)

        def urgent_starts() -> list[dict[str, Any]]:
            return [s for s in _starts(client) if s["collection"] == urgent.collection_id]

        wait_for(lambda: len(urgent_starts()) >= args.urgent, "the urgent images", TRIAL_LIMIT_S)
        starts = _starts(client)
        mine = urgent_starts()
        first, last = mine[0]["t"], mine[-1]["t"]
        between = sum(
            1 for s in starts if s["collection"] == bulk.collection_id and began <= s["t"] <= first
        )
        app.close()
        sessions.kw["bind"].dispose()
    client.close()
    return Trial(mode, first - began, last - began, between, queued_ahead)


def _table(trials: list[Trial], args: argparse.Namespace, rows: list[Any]) -> str:
    lines = [
        f"Overtaking: {args.urgent} images of priority 9 submitted behind {args.bulk:,} of "
        f"priority 0; {args.workers} workers, stand-in task {args.task_seconds} s, "
        f"max-in-flight {args.max_in_flight}, scheduler pass every {args.interval} s",
        "",
        "| messages | queued ahead | first urgent image starts | last starts | bulk images "
        "started before it |",
        "|---|---:|---:|---:|---:|",
    ]
    for trial in trials:
        lines.append(
            f"| {trial.mode} | {trial.queued_ahead} | {trial.first_s:.2f} s | "
            f"{trial.last_s:.2f} s | {trial.bulk_between} |"
        )
    lines += [
        "",
        "Submission speed (benchmarks/submit.py's end-to-end run, local folder):",
        "",
        "| stage | objects | seconds | objects/s |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row.stage} | {row.count:,} | {row.seconds:.2f} | {row.rate:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=1_000, help="images of the big collection")
    parser.add_argument("--urgent", type=int, default=6, help="images of the urgent one")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--task-seconds", type=float, default=0.25, help="stand-in task time")
    parser.add_argument("--max-in-flight", type=int, default=PRODUCTION_MAX_IN_FLIGHT)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
    parser.add_argument("--files", type=int, default=20_000, help="files of the submit run")
    parser.add_argument("--modes", default="priorities,one list")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        broker_url, database_url, node, task_seconds = args.worker
        run_worker(broker_url, database_url, node, float(task_seconds))
        return 0
    logging.basicConfig(level=logging.ERROR)
    admin_url = os.environ.get("PANCHRO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    with ExitStack() as stack:
        broker_url = os.environ.get("PANCHRO_BENCH_BROKER_URL") or stack.enter_context(
            private_redis(SERVER_START_S)
        )
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="panchro-bench-")))
        modes = [mode for mode in args.modes.split(",") if mode]
        trials = [run_trial(mode, args, admin_url, broker_url, tmp) for mode in modes]
        rows = []
        if args.files > 0:
            root = tmp / "scans"
            _write_local_source(root, args.files)
            source, output = str(root), str(tmp / "colour")
            for limit in (None, PRODUCTION_MAX_IN_FLIGHT):
                rows.append(
                    _end_to_end(
                        "local folder",
                        source,
                        output,
                        open_storage(source),
                        args.files,
                        admin_url,
                        broker_url,
                        max_in_flight=limit,
                    )
                )
    print(_table(trials, args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
