"""Each fault of a production cluster, injected in the middle of a collection.

One cluster for the module (PostgreSQL, Redis with an append-only file, moto S3 behind
the fault proxy, ``panchro scheduler`` and ``panchro workers --cpu 2`` as real processes),
one collection of 36 good and 4 corrupt images per fault. After each fault every promise
of ``fault_checks.verify`` must hold: every good image done exactly once with its one
recorded output, corrupt ones failed with a reason, nothing half-written or left open,
originals untouched. The visibility timeout stays at its default (an hour), and every
collection must end within ``RECOVERY_GUARD_S``: recovering at all proves that recovery
does not wait for it. Each test prints its recovery time (``-s`` shows it).

The tests share the cluster, so the harmless faults come first; each test starts again
whatever an earlier one left stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_checks import Verdict
from fault_cluster import FaultCluster
from fault_images import SourceFile, collection_files
from fault_scenarios import (
    disk_full,
    kill_node,
    kill_pool_process,
    restart_postgres,
    restart_redis,
    run_fault,
    s3_errors,
    s3_outage,
    stuck_file,
    stuck_image,
)
from fault_services import (
    AofRedis,
    PrivatePostgres,
    SmallDisk,
    postgres_unavailable,
    small_disk_unavailable,
)

pytestmark = [pytest.mark.slow, pytest.mark.s3]

#: Good images of each fault's collection: fewer than the 36 of ``benchmarks/faults.py``,
#: to keep the module within a few minutes on two cores; the faults hit them the same way
#: (each fault strikes while an image runs and more wait in the broker).
GOOD_IMAGES = 10
#: Corrupt images of each fault's collection.
CORRUPT_IMAGES = 4
#: Size of the small disk of the disk-full fault, in KiB: room for every output.
SMALL_DISK_KIB = 4096
#: Settings of the module's cluster (the ``cluster`` fixture reads them). Time limits in
#: seconds: short, so that the stuck image is stopped soon, yet far above what a 256 px
#: image takes on two busy cores (under 10 s even with several test runs sharing them).
#: The visibility timeout is set to its production default, an hour. The workers warm up
#: at the collections' size, 256 px, not at 512 (a quarter of the time, paid again by
#: every new pool process). Retries wait up to 5, 10, then 20 s (with jitter) instead of
#: 10, 20, then 60 s: a recovery waits less for its next try, while the ten retries still
#: span well over a minute on average; running out of them within the longest outage
#: here (15 s) is less likely than one in a hundred thousand per image.
CLUSTER_SETTINGS = {
    "PANCHRO_SOFT_TIME_LIMIT": "18",
    "PANCHRO_TIME_LIMIT": "20",
    "PANCHRO_VISIBILITY_TIMEOUT": "3600",
    "PANCHRO_WORKER_SIZE": "256",
    "PANCHRO_RETRY_BACKOFF": "5",
    "PANCHRO_RETRY_BACKOFF_MAX": "20",
}


def _files() -> list[SourceFile]:
    return collection_files(GOOD_IMAGES, CORRUPT_IMAGES)


def _assert_recovered(verdict: Verdict, cluster: FaultCluster) -> None:
    problems = verdict.problems()
    assert not problems, "\n".join([verdict.summary(), *problems, cluster.logs()])


def test_pool_process_kill_loses_and_duplicates_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "pool-kill", kill_pool_process, files=_files())
    _assert_recovered(verdict, cluster)
    assert verdict.affected == 1


def test_s3_refusing_connections_for_15_s_loses_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "s3-outage", s3_outage, files=_files())
    _assert_recovered(verdict, cluster)
    assert cluster.proxy.stats.refused_s > 0


def test_s3_throttling_and_5xx_answers_lose_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "s3-errors", s3_errors, files=_files())
    _assert_recovered(verdict, cluster)
    assert cluster.proxy.stats.errors > 0


def test_full_output_disk_is_retried_and_recovers_once_space_is_freed(
    cluster: FaultCluster, tmp_path: Path
) -> None:
    reason = small_disk_unavailable()
    if reason:
        pytest.skip(reason)
    disk = SmallDisk(tmp_path / "disk", SMALL_DISK_KIB)
    disk.mount()
    try:
        verdict = run_fault(
            cluster, "disk-full", disk_full(disk), files=_files(), output=str(disk.mount_point)
        )
    finally:
        disk.unmount()
    _assert_recovered(verdict, cluster)
    assert verdict.affected >= 1


def test_postgresql_immediate_stop_and_start_loses_nothing(
    cluster: FaultCluster, private_postgres: PrivatePostgres | None
) -> None:
    if private_postgres is None:
        pytest.skip(f"no private PostgreSQL cluster to stop here: {postgres_unavailable()}")
    verdict = run_fault(cluster, "postgres", restart_postgres(private_postgres), files=_files())
    _assert_recovered(verdict, cluster)


def test_image_stuck_past_its_time_limit_fails_alone(cluster: FaultCluster) -> None:
    files = _files()
    stuck = stuck_file(files)
    verdict = run_fault(
        cluster,
        "stuck",
        stuck_image(stuck),
        files=files,
        stall=stuck,
        expect_failed={stuck.relative: "time limit"},
    )
    _assert_recovered(verdict, cluster)
    assert cluster.proxy.stats.stalled >= 1


def test_worker_node_kill_loses_and_duplicates_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "node-kill", kill_node, files=_files())
    _assert_recovered(verdict, cluster)
    assert verdict.affected == 1


def test_redis_kill_and_restart_on_its_aof_loses_nothing(
    cluster: FaultCluster, aof_redis: AofRedis
) -> None:
    verdict = run_fault(cluster, "redis", restart_redis(aof_redis), files=_files())
    _assert_recovered(verdict, cluster)
