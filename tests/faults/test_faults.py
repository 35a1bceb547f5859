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

from collections.abc import Iterator
from typing import Any

import pytest
from fault_cluster import FaultCluster, running_cluster
from fault_scenarios import kill_pool_process, run_fault, s3_errors, s3_outage
from fault_services import AofRedis
from s3_fault_proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    fault_database: str,
    aof_redis: AofRedis,
    fault_s3: tuple[Any, str],
    s3_endpoint_url: str,
    fault_proxy: FaultProxy,
) -> Iterator[FaultCluster]:
    """The module's running cluster."""
    client, bucket = fault_s3
    with running_cluster(
        tmp_path_factory.mktemp("cluster"),
        database_url=fault_database,
        broker_url=aof_redis.url,
        s3_client=client,
        s3_endpoint_url=s3_endpoint_url,
        proxy=fault_proxy,
        bucket=bucket,
    ) as started:
        yield started


def _assert_recovered(verdict: Any, cluster: FaultCluster) -> None:
    problems = verdict.problems()
    assert not problems, "\n".join([verdict.summary(), *problems, cluster.logs()])


def test_pool_process_kill_loses_and_duplicates_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "pool-kill", kill_pool_process)
    _assert_recovered(verdict, cluster)
    assert verdict.affected >= 1


def test_s3_refusing_connections_for_15_s_loses_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "s3-outage", s3_outage)
    _assert_recovered(verdict, cluster)


def test_s3_throttling_and_5xx_answers_lose_nothing(cluster: FaultCluster) -> None:
    verdict = run_fault(cluster, "s3-errors", s3_errors)
    _assert_recovered(verdict, cluster)
