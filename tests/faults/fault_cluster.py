"""A whole panchro cluster as an operator runs it, for injecting faults into.

PostgreSQL, a Redis with an append-only file, a moto S3 server behind the fault proxy
(``s3_fault_proxy``), and the real programs as processes: ``panchro db upgrade``,
``panchro submit``, ``panchro scheduler`` and ``panchro workers --cpu 2`` with the
untrained tiny model. The workers reach S3 through the proxy only; the tests and their
checks talk to moto directly.

One cluster serves several collections, one per fault: :meth:`FaultCluster.upload`
puts a collection's originals in the bucket, :meth:`FaultCluster.submit` registers it,
and the catalog queries say how far it got. The ``panchro`` processes log to files in
the cluster's folder, which a failing test prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e_helpers import Launcher, _process_gone, panchro_argv, run_command, wait_until
from fault_images import SourceFile
from s3_fault_proxy import FaultProxy
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from catalog import Attempt, Collection, Image, ImageStatus, make_engine

#: Model input size of every collection: the smallest the network takes.
INPUT_SIZE = 256
#: CPU workers of ``panchro workers --cpu``.
WORKERS = 2
#: Seconds the workers get to load the model and warm up (slow on shared cores).
WORKERS_READY_S = 240.0
#: Seconds between two dispatch passes of ``panchro scheduler`` in the tests (the
#: default, 10 s, only delays what the tests wait for).
SCHEDULER_INTERVAL_S = 2.0
#: Dummy credentials for the S3 endpoint (moto accepts any).
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Log line of a pool process that finished loading and warming up the model.
_WARM = "warm-up pass"


def new_bucket(endpoint_url: str, prefix: str) -> tuple[Any, str]:
    """Return a boto3 client of the S3 endpoint and a new bucket named ``prefix-<random>``.

    Args:
        endpoint_url: The real S3 endpoint (moto's server).
        prefix: The start of the bucket's name.

    Returns:
        The client and the bucket's name.
    """
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=AWS_ENVIRONMENT["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@dataclass
class Submitted:
    """One collection of the cluster.

    Attributes:
        name: Its name (also its key prefix in the bucket).
        files: Its originals.
        source: Where they are (``s3://bucket/name/src``).
        output: Where the colour copies go.
        etags: ETag of each original's key, as uploaded.
    """

    name: str
    files: list[SourceFile]
    source: str
    output: str
    etags: dict[str, str] = field(default_factory=dict)

    def key(self, relative: str) -> str:
        """The bucket key of an original."""
        return f"{self.name}/src/{relative}"


@dataclass(frozen=True)
class ImageRow:
    """What the catalog says about one image (a detached copy).

    Attributes:
        id: Its id.
        relative: Its path below the source.
        status: Its status.
        last_error: Why it failed.
        output_uri: Where its output goes.
        output_sha256: SHA-256 of the output it recorded.
        worker: The worker of its last try.
        finished_at: When it ended.
    """

    id: int
    relative: str
    status: ImageStatus
    last_error: str | None
    output_uri: str
    output_sha256: str | None
    worker: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    """One try at an image (a detached copy).

    Attributes:
        image_id: The image.
        outcome: How it ended; None while it runs.
        error: Why it did not end done.
        started_at: When it started.
    """

    image_id: int
    outcome: str | None
    error: str | None
    started_at: datetime


class FaultCluster:
    """The services and ``panchro`` processes of one fault module.

    Args:
        work: A folder for logs.
        database_url: An empty PostgreSQL database.
        broker_url: The Redis broker.
        s3_client: A boto3 client of the real S3 endpoint.
        s3_endpoint_url: The real S3 endpoint (for ``panchro submit``).
        proxy: The fault proxy in front of it (the workers' endpoint).
        bucket: The bucket of every collection.
        settings: Further ``PANCHRO_*`` variables of every process (time limits...).
        scheduler_interval: Seconds between two dispatch passes.
    """

    def __init__(
        self,
        work: Path,
        *,
        database_url: str,
        broker_url: str,
        s3_client: Any,
        s3_endpoint_url: str,
        proxy: FaultProxy,
        bucket: str,
        settings: Mapping[str, str] | None = None,
        scheduler_interval: float = SCHEDULER_INTERVAL_S,
    ) -> None:
        self.work = work
        self.database_url = database_url
        self.broker_url = broker_url
        self.s3 = s3_client
        self.s3_endpoint_url = s3_endpoint_url
        self.proxy = proxy
        self.bucket = bucket
        self.scheduler_interval = scheduler_interval
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PANCHRO_") and key != "AWS_PROFILE"
        }
        self.env = {**env, **AWS_ENVIRONMENT, **dict(settings or {})}
        self.engine: Engine = make_engine(database_url)
        self.workers: Launcher | None = None
        self.scheduler: Launcher | None = None
        self._restarts = 0

    # ------------------------------------------------------------------ processes

    def panchro(self, *args: str, s3_endpoint_url: str | None = None) -> list[str]:
        """The command line of ``panchro`` with this cluster's services."""
        return panchro_argv(
            *args,
            database_url=self.database_url,
            broker_url=self.broker_url,
            s3_endpoint_url=s3_endpoint_url or self.s3_endpoint_url,
        )

    def run(self, *args: str) -> str:
        """Run a ``panchro`` command that must end and succeed; return what it printed."""
        return run_command(self.panchro(*args), self.env, self.work).stdout

    def start(self) -> None:
        """Migrate the catalog, then start the scheduler and the workers; wait until warm."""
        self.run("db", "upgrade")
        self.start_scheduler()
        self.start_workers()

    def start_scheduler(self) -> None:
        """Start ``panchro scheduler`` (logging to ``scheduler-N.log``)."""
        self._restarts += 1
        argv = self.panchro("scheduler", "--interval", str(self.scheduler_interval))
        self.scheduler = Launcher(argv, self.env, self.work / f"scheduler-{self._restarts}.log")

    def start_workers(self) -> None:
        """Start ``panchro workers --cpu 2`` through the proxy; wait until both are warm."""
        self._restarts += 1
        argv = self.panchro(
            "workers",
            "--cpu",
            str(WORKERS),
            "--untrained",
            "--precision",
            "fp32",
            s3_endpoint_url=self.proxy.url,
        )
        workers = Launcher(argv, self.env, self.work / f"workers-{self._restarts}.log")
        self.workers = workers

        def warm() -> bool:
            workers.assert_running()
            return workers.text().count(_WARM) >= WORKERS

        wait_until(warm, WORKERS_READY_S, "both workers to load and warm up the model")

    def ensure_running(self) -> None:
        """Start again whatever a previous fault left stopped (a failed test's leftovers)."""
        if self.scheduler is None or self.scheduler.proc.poll() is not None:
            self.start_scheduler()
        if self.workers is None or self.workers.proc.poll() is not None:
            self.start_workers()

    def logs(self) -> str:
        """The last lines of every process's log, for a failure message."""
        parts = []
        for path in sorted(self.work.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-60:]
            parts.append(f"----- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the workers and the scheduler together (killing what does not stop)."""
        launchers = [item for item in (self.workers, self.scheduler) if item is not None]
        for launcher in launchers:
            with contextlib.suppress(Exception):
                if launcher.proc.poll() is None:
                    launcher.proc.send_signal(signal.SIGTERM)
        for launcher in launchers:
            with contextlib.suppress(Exception):
                launcher.proc.wait(timeout=30)
            launcher.kill()
        self.engine.dispose()

    # ------------------------------------------------------------------ pids

    def node_pids(self) -> dict[str, int]:
        """The main process of each worker node now, by node name."""
        assert self.workers is not None
        return {name: pid for name, pid in self.workers.worker_pids().items() if _alive(pid)}

    def pool_pids(self) -> dict[str, int]:
        """The live pool process of each worker node, by node name."""
        assert self.workers is not None
        nodes = {pid: name for name, pid in self.node_pids().items()}
        found = {}
        for pid in self.workers.pool_pids():
            parent = _parent(pid)
            if parent in nodes and _alive(pid):
                found[nodes[parent]] = pid
        return found

    # ------------------------------------------------------------------ collections

    def upload(self, name: str, files: list[SourceFile], output: str | None = None) -> Submitted:
        """Put a collection's originals in the bucket.

        Args:
            name: The collection's name.
            files: Its originals.
            output: Its output location; None for ``s3://bucket/name/out``.

        Returns:
            The collection, not yet submitted.
        """
        submitted = Submitted(
            name=name,
            files=files,
            source=f"s3://{self.bucket}/{name}/src",
            output=output or f"s3://{self.bucket}/{name}/out",
        )
        for item in files:
            response = self.s3.put_object(
                Bucket=self.bucket, Key=submitted.key(item.relative), Body=item.data
            )
            submitted.etags[item.relative] = response["ETag"]
        return submitted

    def submit(self, submitted: Submitted) -> str:
        """``panchro submit`` the collection (its first tasks go to the broker at once)."""
        return self.run(
            "submit",
            submitted.source,
            "--collection",
            submitted.name,
            "--output",
            submitted.output,
            "--size",
            str(INPUT_SIZE),
        )

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine) as db:
            yield db

    def _collection_id(self, db: Session, name: str) -> int:
        found = db.scalar(select(Collection.id).where(Collection.name == name))
        assert found is not None, f"collection {name} is not in the catalog"
        return int(found)

    def images(self, name: str) -> list[ImageRow]:
        """Every image of a collection as the catalog has it now."""
        with self._session() as db:
            query = select(Image).where(Image.collection_id == self._collection_id(db, name))
            return [
                ImageRow(
                    id=row.id,
                    relative=row.relative_path,
                    status=row.status,
                    last_error=row.last_error,
                    output_uri=row.output_uri,
                    output_sha256=row.output_sha256,
                    worker=row.worker_host,
                    finished_at=row.finished_at,
                )
                for row in db.scalars(query)
            ]

    def attempts(self, name: str) -> list[AttemptRow]:
        """Every try at an image of a collection, oldest first."""
        with self._session() as db:
            ids = select(Image.id).where(Image.collection_id == self._collection_id(db, name))
            query = select(Attempt).where(Attempt.image_id.in_(ids)).order_by(Attempt.id)
            return [
                AttemptRow(
                    image_id=row.image_id,
                    outcome=None if row.outcome is None else str(row.outcome.value),
                    error=row.error,
                    started_at=row.started_at,
                )
                for row in db.scalars(query)
            ]

    def counts(self, name: str) -> dict[ImageStatus, int]:
        """How many images of a collection are in each status."""
        with self._session() as db:
            query = (
                select(Image.status, func.count())
                .where(Image.collection_id == self._collection_id(db, name))
                .group_by(Image.status)
            )
            return {status: int(count) for status, count in db.execute(query)}

    def running(self, name: str) -> list[ImageRow]:
        """The images of a collection being worked on now."""
        return [row for row in self.images(name) if row.status is ImageStatus.RUNNING]

    def wait_for(self, what: str, condition: Any, timeout: float) -> None:
        """Wait (bounded) until ``condition()``; fail with the processes' logs if never."""
        try:
            wait_until(condition, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def wait_started(self, name: str, *, done: int = 2, timeout: float = 240.0) -> None:
        """Wait until ``done`` images are done and some are running: mid-collection."""

        def started() -> bool:
            counts = self.counts(name)
            return counts.get(ImageStatus.DONE, 0) >= done and ImageStatus.RUNNING in counts

        self.wait_for(f"{name}: {done} images done and one running", started, timeout)

    def wait_finished(self, name: str, timeout: float) -> float:
        """Wait until no image of the collection is pending, queued or running.

        Args:
            name: The collection.
            timeout: Seconds at most: a guard against hanging, not a target.

        Returns:
            When it was seen finished (epoch seconds).
        """
        open_statuses = (ImageStatus.PENDING, ImageStatus.QUEUED, ImageStatus.RUNNING)

        def finished() -> bool:
            counts = self.counts(name)
            return not any(counts.get(status, 0) for status in open_statuses)

        self.wait_for(f"{name}: every image to end", finished, timeout)
        return time.time()


def _alive(pid: int) -> bool:
    return not _process_gone(pid)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def running_cluster(work: Path, **services: Any) -> Iterator[FaultCluster]:
    """Start a cluster (``FaultCluster(work, **services)``), yield it, stop it at the end."""
    cluster = FaultCluster(work, **services)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
