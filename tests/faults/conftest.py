"""Fixtures of the fault suite: one cluster per module, owned by it so that it may break it.

The module's cluster has its own Redis (append-only file, on a free port), its own
PostgreSQL cluster where one can be had (else a fresh database on the shared server, and
the PostgreSQL fault is skipped), the session's moto server behind a fault proxy, one
bucket, and the ``panchro`` scheduler and workers, started once for all of the module's
faults. Each test runs its own collection through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

# The end-to-end test's helpers start and watch the ``panchro`` processes.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from fault_cluster import FaultCluster, new_bucket, running_cluster  # noqa: E402
from fault_services import (  # noqa: E402
    AofRedis,
    PrivatePostgres,
    postgres_unavailable,
    redis_unavailable,
)
from s3_fault_proxy import FaultProxy  # noqa: E402

from tests.conftest import free_port  # noqa: E402


@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AofRedis]:
    """The module's Redis, with an append-only file fsynced on every write."""
    reason = redis_unavailable()
    if reason:
        pytest.skip(reason)
    server = AofRedis(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres | None]:
    """The module's own PostgreSQL cluster, or None where none can be had here."""
    if postgres_unavailable() is not None:
        yield None
        return
    server = PrivatePostgres(free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def fault_database(request: pytest.FixtureRequest, private_postgres: PrivatePostgres | None) -> str:
    """An empty catalog database: on the private cluster if there is one, else on the
    shared server (asked for only then, so that its absence skips nothing needlessly)."""
    if private_postgres is not None:
        return private_postgres.create_database()
    factory: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
    return factory()


@pytest.fixture(scope="module")
def fault_s3(s3_endpoint_url: str) -> Iterator[tuple[Any, str]]:
    """A boto3 client of the real S3 endpoint and a new bucket, emptied afterwards."""
    client, bucket = new_bucket(s3_endpoint_url, "panchro-faults")
    yield client, bucket
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def fault_proxy(s3_endpoint_url: str) -> Iterator[FaultProxy]:
    """The fault proxy in front of the S3 endpoint; the workers' only way to S3."""
    upstream = urlsplit(s3_endpoint_url)
    assert upstream.hostname is not None and upstream.port is not None
    with FaultProxy(upstream.hostname, upstream.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fault_database: str,
    aof_redis: AofRedis,
    fault_s3: tuple[Any, str],
    s3_endpoint_url: str,
    fault_proxy: FaultProxy,
) -> Iterator[FaultCluster]:
    """The module's running cluster, with the module's ``CLUSTER_SETTINGS`` (``PANCHRO_*``)."""
    client, bucket = fault_s3
    with running_cluster(
        tmp_path_factory.mktemp("cluster"),
        database_url=fault_database,
        broker_url=aof_redis.url,
        s3_client=client,
        s3_endpoint_url=s3_endpoint_url,
        proxy=fault_proxy,
        bucket=bucket,
        settings=getattr(request.module, "CLUSTER_SETTINGS", None),
    ) as started:
        yield started
