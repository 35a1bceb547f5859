"""The faults themselves: each function breaks one part of a running cluster, then ends it.

Every scenario takes the cluster and a collection that is being worked on, injects its
fault in the middle of the collection, ends it, and returns the :class:`FaultWindow`.
:func:`run_fault` is the whole experiment around one of them: upload, submit, wait until
the collection is half-way, inject, wait (bounded) until every image has ended, verify.
The tests assert on its verdict; ``benchmarks/faults.py`` prints it as a table.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fault_checks import FaultWindow, Verdict, fault_window, verify
from fault_images import SourceFile, collection_files

if TYPE_CHECKING:
    from fault_cluster import FaultCluster, Submitted
    from fault_services import AofRedis, PrivatePostgres, SmallDisk

#: Seconds every affected image gets to end after a fault: a guard against hanging, not a
#: target. The visibility timeout stays at its default (an hour), so a collection that
#: ends within this guard recovered without waiting for it.
RECOVERY_GUARD_S = 300.0
#: Seconds Redis or PostgreSQL stays down.
DOWN_S = 5.0
#: Seconds S3 refuses connections.
S3_OUTAGE_S = 15.0
#: Seconds S3 answers ``503 SlowDown``, then ``500 InternalError``.
S3_ERRORS_S = 6.0
#: Seconds the disk stays full at most while the workers meet it.
DISK_FULL_S = 20.0
#: Seconds a stalled GET waits before its answer: far beyond any hard time limit used.
STALL_S = 600.0

#: A scenario: breaks the cluster while the collection runs, returns the fault's window.
Scenario = Callable[["FaultCluster", "Submitted"], FaultWindow]


def _busy_node(cluster: FaultCluster, name: str) -> tuple[str, int, int]:
    """A worker node colorizing an image of the collection now: node, main pid, pool pid."""
    found: list[tuple[str, int, int]] = []

    def busy() -> bool:
        nodes, pools = cluster.node_pids(), cluster.pool_pids()
        for row in cluster.running(name):
            if row.worker in nodes and row.worker in pools:
                found.append((row.worker, nodes[row.worker], pools[row.worker]))
                return True
        return False

    cluster.wait_for(f"{name}: a worker busy with one of its images", busy, 120.0)
    return found[0]


def kill_pool_process(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
    """``kill -9`` the pool process (the one running the model) of a busy worker."""
    node, _, pool = _busy_node(cluster, submitted.name)
    with fault_window(cluster, submitted.name, "pool process kill -9", worker=node) as window:
        os.kill(pool, signal.SIGKILL)
    return window


def kill_node(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
    """``kill -9`` a busy worker node's whole process group (main and pool process)."""
    node, main, _ = _busy_node(cluster, submitted.name)
    with fault_window(cluster, submitted.name, "worker node kill -9", worker=node) as window:
        os.killpg(main, signal.SIGKILL)
    return window


def restart_server(fault: str, kill: Callable[[], None], start: Callable[[], None]) -> Scenario:
    """A server killed (``kill``), down for ``DOWN_S``, then started again (``start``).

    Args:
        fault: The fault's name.
        kill: Kills the server: ``AofRedis.kill``, ``PrivatePostgres.stop_immediately``.
        start: Starts it again on the same data.

    Returns:
        The scenario.
    """

    def scenario(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
        _busy_node(cluster, submitted.name)
        with fault_window(cluster, submitted.name, fault) as window:
            kill()
            time.sleep(DOWN_S)
            start()
        return window

    return scenario


def restart_redis(redis: AofRedis) -> Scenario:
    """Redis ``kill -9``, down for ``DOWN_S``, restarted on the same append-only file."""
    return restart_server("Redis kill -9 + restart", redis.kill, redis.start)


def restart_postgres(postgres: PrivatePostgres) -> Scenario:
    """PostgreSQL ``pg_ctl stop -m immediate``, down for ``DOWN_S``, started again."""
    return restart_server(
        "PostgreSQL stop -m immediate + start", postgres.stop_immediately, postgres.start
    )


def s3_outage(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
    """S3 refuses every connection for ``S3_OUTAGE_S`` (open ones are cut)."""
    _busy_node(cluster, submitted.name)
    with fault_window(cluster, submitted.name, "S3 refuses connections") as window:
        cluster.proxy.refuse(S3_OUTAGE_S)
        time.sleep(S3_OUTAGE_S)
        cluster.proxy.heal()
    return window


def s3_errors(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
    """S3 throttles (``503 SlowDown``), then fails (``500 InternalError``) every request."""
    _busy_node(cluster, submitted.name)
    with fault_window(cluster, submitted.name, "S3 503 SlowDown + 500") as window:
        cluster.proxy.fail(503, "SlowDown", seconds=S3_ERRORS_S)
        time.sleep(S3_ERRORS_S)
        cluster.proxy.fail(500, "InternalError", seconds=S3_ERRORS_S)
        time.sleep(S3_ERRORS_S)
        cluster.proxy.heal()
    return window


def disk_full(disk: SmallDisk) -> Scenario:
    """The output disk fills up until a write fails for it; then space is freed.

    A full disk is retried like an outage (``storage.errors.StorageFull``): the image hit
    is handed back and its task retried, so freeing space is all it takes to recover.
    """

    def scenario(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
        _busy_node(cluster, submitted.name)
        with fault_window(cluster, submitted.name, "output disk full (ENOSPC)") as window:
            disk.fill()
            deadline = time.monotonic() + DISK_FULL_S
            while time.monotonic() < deadline and not _handed_back_for_space(cluster, submitted):
                time.sleep(0.5)
            assert _handed_back_for_space(cluster, submitted), "no write met the full disk"
            disk.free()
        return window

    return scenario


def _handed_back_for_space(cluster: FaultCluster, submitted: Submitted) -> bool:
    return any("no space" in (row.error or "") for row in cluster.attempts(submitted.name))


def stuck_file(files: list[SourceFile]) -> SourceFile:
    """The good image to get stuck: the last one, sent last, so the others run first."""
    return [item for item in files if item.good][-1]


def stuck_image(stuck: SourceFile) -> Scenario:
    """One image's GET hangs (stalled by the proxy) past the workers' time limits.

    ``run_fault(..., stall=stuck)`` sets the stall before the collection is submitted;
    the window runs from the moment the image is seen running, so its "recovery" is the
    time until it is recorded failed.
    """

    def scenario(cluster: FaultCluster, submitted: Submitted) -> FaultWindow:
        def running() -> bool:
            return any(row.relative == stuck.relative for row in cluster.running(submitted.name))

        cluster.wait_for(f"{stuck.relative} to start", running, RECOVERY_GUARD_S)
        with fault_window(cluster, submitted.name, "image stuck past its time limit") as window:
            window.end = window.start
        return window

    return scenario


def run_fault(
    cluster: FaultCluster,
    name: str,
    scenario: Scenario,
    *,
    files: list[SourceFile] | None = None,
    output: str | None = None,
    stall: SourceFile | None = None,
    expect_failed: Mapping[str, str] | None = None,
) -> Verdict:
    """Run one collection through one fault and return the verdict (printed too).

    Args:
        cluster: The running cluster.
        name: The collection's name (unique in the cluster).
        scenario: The fault.
        files: The originals; None for :func:`fault_images.collection_files`.
        output: Output location; None for the collection's prefix in the bucket.
        stall: An original whose GETs the proxy stalls from the start.
        expect_failed: Good images that must fail, with words of their reason.

    Returns:
        The verdict.
    """
    cluster.ensure_running()
    submitted = cluster.upload(name, files or collection_files(), output)
    if stall is not None:
        cluster.proxy.stall(f"{cluster.bucket}/{submitted.key(stall.relative)}", STALL_S)
    cluster.submit(submitted)
    try:
        window = scenario(cluster, submitted)
        cluster.wait_finished(submitted.name, RECOVERY_GUARD_S)
    finally:
        cluster.proxy.heal()
    verdict = verify(cluster, submitted, window, expect_failed=expect_failed)
    print(verdict.summary())
    return verdict
