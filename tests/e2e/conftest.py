"""Fixtures of the end-to-end test: services shared by one whole pipeline run.

The pipeline runs once per module (it takes about a minute on two cores) and several
tests then check what it left behind, so these fixtures are module- or session-scoped:
a Redis database of its own, an S3 bucket on the moto server, and a synthetic checkpoint
of the tiny model written with ``torch.save``, whose SHA-256 the provenance must carry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Redis database number of the end-to-end run. The ``redis_url`` fixture hands out 1-15
#: in turn to function-scoped tests; this one is flushed before and after the module.
E2E_REDIS_DB = 15
#: Dummy credentials for the S3 endpoint (moto accepts any).
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Seed of the random weights of the synthetic checkpoint.
CHECKPOINT_SEED = 1234


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint file of ``ddcolor_paper_tiny`` with random weights (a bare state dict).

    The file name names the model, as the official files do, so that the catalog records
    ``ddcolor_paper_tiny`` as the model.
    """
    import torch

    from ddcolor import build_ddcolor

    path = tmp_path_factory.mktemp("e2e-weights") / "ddcolor_paper_tiny.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CHECKPOINT_SEED)
        model = build_ddcolor("ddcolor_paper_tiny")
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def e2e_redis_url(redis_server_url: str) -> Iterator[str]:
    """URL of an emptied Redis database for the module's pipeline run."""
    import redis

    url = f"{redis_server_url}/{E2E_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def e2e_environment() -> dict[str, str]:
    """Environment of the ``panchro`` processes: this one's, without inherited settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PANCHRO_") and key != "AWS_PROFILE"
    }
    env.update(AWS_ENVIRONMENT)
    return env


@pytest.fixture(scope="module")
def s3_client(s3_endpoint_url: str) -> Any:
    """A boto3 S3 client of the endpoint, with the dummy credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name=AWS_ENVIRONMENT["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="module")
def e2e_bucket(s3_client: Any) -> Iterator[str]:
    """Name of a new, empty bucket; emptied and removed after the module."""
    name = f"panchro-e2e-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3_client.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3_client.delete_bucket(Bucket=name)
