"""Speed of the producer side: scan, register and dispatch, stage by stage and end to end.

Two sources are measured, each into fresh PostgreSQL databases and a real Redis:

- a local folder of ``--files`` small JPEG files (100,000 by default, in 100 folders);
- an S3 prefix of ``--objects`` objects (10,000 by default) on a moto server that the
  benchmark starts itself.

For each source the stages run one after the other (the scan into a list, then the
registration in chunks, then one dispatch pass with ``max_in_flight`` above the count so
that every image is sent), and then ``scheduler.submit()`` runs end to end on another
fresh database, streaming all three: once sending every image, once with the default
``max_in_flight`` of 200 (what a submission does in production; the scheduler sends the
rest as workers free room). Sending uses the app's defaults, ``task-sent`` events
included, and ``scheduler.celery_sender``'s template path; ``--without-events`` times
dispatch without events as well, and ``--celery-path`` through Celery's own message code
(``celery_sender(app, fast=False)``), the way every task was sent before. Every count is
checked against the catalog and against the length of the Redis queue.

Usage::

    python benchmarks/submit.py                        # about two minutes on 2 cores
    python benchmarks/submit.py --files 20000 --objects 2000 --without-events --celery-path
    PANCHRO_BENCH_DATABASE_URL=postgresql+psycopg://me@db/postgres python benchmarks/submit.py

``PANCHRO_BENCH_DATABASE_URL`` names a PostgreSQL database whose role may create
databases (default: the local ``test`` database). ``PANCHRO_BENCH_BROKER_URL`` names a
Redis database that the benchmark may empty; unset, the benchmark starts a private
``redis-server`` on a free port, so that no one's queue is ever flushed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import redis
from bench_servers import free_port, fresh_database, private_redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from catalog import (
    create_or_get_collection,
    make_sessionmaker,
    register_images,
    transaction,
    unqueue_stale,
)
from scheduler import (
    SUBMIT_CHUNK_ROWS,
    celery_sender,
    dispatch,
    plan_outputs,
    scan_source,
    submit,
)
from storage.options import StorageOptions
from storage.registry import open_storage
from workers.app import create_app
from workers.broker import COLORIZE_QUEUE, queue_keys

#: PostgreSQL used when PANCHRO_BENCH_DATABASE_URL is unset.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Files in the local source.
DEFAULT_FILES = 100_000
#: Objects in the S3 source.
DEFAULT_OBJECTS = 10_000
#: Folders the sources are spread over.
FOLDERS = 100
#: Content of every source file: the start of a JPEG, enough for the scan to recognise it.
JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(60)
#: Seconds to wait for a private server to answer.
SERVER_START_S = 30.0
#: The default ``max_in_flight`` of ``panchro`` (its Settings), measured as a second run.
PRODUCTION_MAX_IN_FLIGHT = 200


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    source: str
    stage: str
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        """Objects per second."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def _settle(admin_url: str) -> None:
    """Write PostgreSQL's dirty pages out now (``CHECKPOINT``), between two measurements.

    A dispatch pass updates every row and its indexes several times; the checkpoint that
    writes those pages back would otherwise fall into the next measurement. Skipped where
    the role may not run it.
    """
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:
        logging.getLogger(__name__).warning("no CHECKPOINT between measurements: %s", exc)
    finally:
        engine.dispose()


def _empty_broker(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


def _queue_length(broker_url: str) -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return sum(int(client.llen(key)) for key in queue_keys(COLORIZE_QUEUE))
    finally:
        client.close()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


def _stages(
    label: str,
    source: str,
    output: str,
    storage: Any,
    expected: int,
    admin_url: str,
    broker_url: str,
    *,
    without_events: bool,
    celery_path: bool,
) -> list[Row]:
    """Time scan, register and dispatch one after the other (then the variants asked for)."""
    rows: list[Row] = []
    with fresh_database(admin_url) as database_url:
        sessions = make_sessionmaker(database_url)
        _empty_broker(broker_url)
        _settle(admin_url)

        found, scan_s = _timed(lambda: list(scan_source(source, storage=storage)[0]))
        _check(len(found) == expected, f"{label}: scanned {len(found)} of {expected}")
        rows.append(Row(label, "scan", len(found), scan_s))

        def register() -> int:
            with transaction(sessions) as db:
                collection, _ = create_or_get_collection(db, "bench", source, output)
                collection_id = collection.id
            planned = plan_outputs(found, output=output)
            total = 0
            while chunk := list(islice(planned, SUBMIT_CHUNK_ROWS)):
                with transaction(sessions) as db:
                    total += register_images(db, collection_id, chunk).new
            return total

        registered, register_s = _timed(register)
        _check(registered == expected, f"{label}: registered {registered} of {expected}")
        rows.append(Row(label, "plan + register", registered, register_s))

        variants = [("dispatch", True, True)]
        if without_events:
            variants.append(("dispatch without task-sent events", False, True))
        if celery_path:
            variants.append(("dispatch through Celery's message code", True, False))
        for stage, events, fast in variants:
            app = create_app(broker_url=broker_url, task_send_sent_event=events)
            send = celery_sender(app, fast=fast)
            _settle(admin_url)
            start = time.perf_counter()
            report = dispatch(sessions, send, max_in_flight=expected + 1)
            dispatch_s = time.perf_counter() - start
            _check(report.sent == expected, f"{label}: dispatched {report.sent} of {expected}")
            _check(_queue_length(broker_url) == expected, f"{label}: Redis queue length")
            rows.append(Row(label, stage, report.sent, dispatch_s))
            app.close()
            # Back to pending for the next measurement, as a lost broker would leave them.
            with transaction(sessions) as db:
                unqueue_stale(db, queued_before=datetime.now(UTC) + timedelta(days=1))
            _empty_broker(broker_url)
        sessions.kw["bind"].dispose()
    return rows


def _end_to_end(
    label: str,
    source: str,
    output: str,
    storage: Any,
    expected: int,
    admin_url: str,
    broker_url: str,
    *,
    max_in_flight: int | None = None,
) -> Row:
    """Time submit(): scan, register and dispatch streamed, with the default app.

    With ``max_in_flight`` None every image is sent; otherwise that many.
    """
    limit = expected + 1 if max_in_flight is None else max_in_flight
    to_send = min(expected, limit)
    with fresh_database(admin_url) as database_url:
        sessions = make_sessionmaker(database_url)
        _empty_broker(broker_url)
        app = create_app(broker_url=broker_url)
        _settle(admin_url)
        summary, seconds = _timed(
            lambda: submit(
                sessions,
                name="bench",
                source=source,
                output=output,
                storage=storage,
                send=celery_sender(app),
                max_in_flight=limit,
                case_insensitive=False,
            )
        )
        _check(summary.new == expected, f"{label}: submitted {summary.new} of {expected}")
        _check(summary.dispatched == to_send, f"{label}: dispatched {summary.dispatched}")
        _check(_queue_length(broker_url) == to_send, f"{label}: Redis queue length")
        app.close()
        sessions.kw["bind"].dispose()
        _empty_broker(broker_url)
    stage = "end to end: submit(), all sent"
    if max_in_flight is not None:
        stage = f"end to end: submit(), max_in_flight {max_in_flight:,}"
    return Row(label, stage, expected, seconds)


def _write_local_source(root: Path, count: int) -> None:
    # Distinct files, not hard links to one: a scan of links would stat and read one
    # cached inode over and over and look faster than a real archive.
    for folder in range(FOLDERS):
        (root / f"box{folder:03d}").mkdir(parents=True)
    for index in range(count):
        path = root / f"box{index % FOLDERS:03d}" / f"scan{index:07d}.jpg"
        with open(path, "wb") as handle:
            handle.write(JPEG_BYTES)


@contextmanager
def _moto_server(bucket: str, count: int) -> Iterator[str]:
    """Start a moto server in a child process, with ``count`` objects in ``bucket``.

    The objects are put straight into the server's in-memory backend: uploading them over
    HTTP would take longer than the whole benchmark.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-moto", str(port), bucket, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        # moto announces itself on stdout before the child says it is ready.
        for line in proc.stdout:
            if line.strip() == b"ready":
                break
        else:
            raise SystemExit("the moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _serve_moto(port: int, bucket: str, count: int) -> None:
    """Run a moto server with a filled bucket until terminated (the child process)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    for index in range(count):
        key = f"scans/box{index % FOLDERS:03d}/scan{index:07d}.jpg"
        backend.put_object(bucket, key, JPEG_BYTES)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def _machine() -> str:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 2**20
                break
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores ({model}), {memory_gib:.0f} GiB RAM, "
        f"Python {platform.python_version()}, load average before the run {load}"
    )


def _versions(admin_url: str, broker_url: str) -> str:
    import celery
    import kombu
    import sqlalchemy

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        postgres = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    client = redis.Redis.from_url(broker_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    return (
        f"PostgreSQL {postgres}, Redis {redis_version}, Celery {celery.__version__}, "
        f"kombu {kombu.__version__}, SQLAlchemy {sqlalchemy.__version__}"
    )


def _table(rows: list[Row]) -> str:
    lines = [
        "| source | stage | objects | seconds | objects/s |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.source} | {row.stage} | {row.count:,} | {row.seconds:.2f} | {row.rate:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the result table (Markdown).

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=DEFAULT_FILES, help="local files")
    parser.add_argument("--objects", type=int, default=DEFAULT_OBJECTS, help="S3 objects (0: skip)")
    parser.add_argument(
        "--without-events",
        action="store_true",
        help="also time dispatch with the app's task-sent events off",
    )
    parser.add_argument(
        "--celery-path",
        action="store_true",
        help="also time dispatch through Celery's own message code (the slower path)",
    )
    parser.add_argument("--serve-moto", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_moto:
        port, bucket, count = args.serve_moto
        _serve_moto(int(port), bucket, int(count))
        return 0
    # The catalog logs every stale image it returns to pending; only errors matter here.
    logging.basicConfig(level=logging.ERROR)
    admin_url = os.environ.get("PANCHRO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    machine = _machine()
    with ExitStack() as stack:
        broker_url = os.environ.get("PANCHRO_BENCH_BROKER_URL") or stack.enter_context(
            private_redis(SERVER_START_S)
        )
        rows = _run(args, admin_url, broker_url)
        services = _versions(admin_url, broker_url)
    print(f"Machine: {machine}")
    print(f"Services (loopback): {services}")
    print()
    print(_table(rows))
    return 0


def _run(args: argparse.Namespace, admin_url: str, broker_url: str) -> list[Row]:
    rows: list[Row] = []

    with tempfile.TemporaryDirectory(prefix="panchro-bench-") as tmp:
        root = Path(tmp) / "scans"
        _, prepare_s = _timed(lambda: _write_local_source(root, args.files))
        print(f"wrote {args.files:,} local files in {prepare_s:.1f} s", file=sys.stderr)
        source, output = str(root), str(Path(tmp) / "colour")
        storage = open_storage(source)
        rows += _source_rows(
            "local folder", source, output, storage, args.files, args, admin_url, broker_url
        )

    if args.objects > 0:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
        bucket = f"panchro-bench-{uuid.uuid4().hex[:8]}"
        with _moto_server(bucket, args.objects) as endpoint:
            source, output = f"s3://{bucket}/scans", f"s3://{bucket}/colour"
            storage = open_storage(
                source, StorageOptions(endpoint_url=endpoint, region="us-east-1")
            )
            rows += _source_rows(
                "S3 (moto)", source, output, storage, args.objects, args, admin_url, broker_url
            )

    return rows


def _source_rows(
    label: str,
    source: str,
    output: str,
    storage: Any,
    count: int,
    args: argparse.Namespace,
    admin_url: str,
    broker_url: str,
) -> list[Row]:
    """Every stage of one source, then submit() end to end without and with the limit."""
    rows = _stages(
        label,
        source,
        output,
        storage,
        count,
        admin_url,
        broker_url,
        without_events=args.without_events,
        celery_path=args.celery_path,
    )
    for limit in (None, PRODUCTION_MAX_IN_FLIGHT):
        rows.append(
            _end_to_end(
                label, source, output, storage, count, admin_url, broker_url, max_in_flight=limit
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
