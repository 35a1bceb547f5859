"""Fixtures for the real services the tests talk to: PostgreSQL, Redis and an S3 API.

Each service's URL comes from an environment variable; where it is unset the fixture
looks for the conventional local server, then starts a private one from installed
binaries, and otherwise skips the test with the reason.

- ``PANCHRO_TEST_DATABASE_URL``: a PostgreSQL URL whose role may create databases.
- ``PANCHRO_TEST_REDIS_URL``: a Redis URL; each test gets its own database number.
- ``PANCHRO_TEST_S3_ENDPOINT_URL``: an S3 endpoint; unset, a moto server is started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

#: PostgreSQL tried when PANCHRO_TEST_DATABASE_URL is unset.
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Redis tried when PANCHRO_TEST_REDIS_URL is unset.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Seconds to wait for a private server to accept connections.
SERVER_START_TIMEOUT = 30.0
#: Connections that drop the session's databases at its end, together.
DROP_THREADS = 8


#: Test files that take a minute or more, longest first. With two test processes taking
#: whole files (pytest-xdist, ``--dist loadfile``), starting these first keeps one of them
#: from running alone at the end.
LONG_FILES = (
    "tests/faults/test_faults.py",
    "tests/e2e/test_end_to_end.py",
    "tests/panchro/test_bad_inputs.py",
    "tests/panchro/test_run_command.py",
    "tests/workers/test_recovery.py",
    "tests/panchro/test_run_lock.py",
    "tests/workers/test_worker_hands_back.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the long files first (see :data:`LONG_FILES`); the rest keep their order."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def private_digest_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Checkpoint digests remembered by this session stay in its own folder.

    Set in the environment, so the commands and workers the tests start use it too.
    """
    previous = os.environ.get("PANCHRO_DIGEST_CACHE")
    os.environ["PANCHRO_DIGEST_CACHE"] = str(tmp_path_factory.mktemp("digests"))
    yield
    if previous is None:
        os.environ.pop("PANCHRO_DIGEST_CACHE", None)
    else:
        os.environ["PANCHRO_DIGEST_CACHE"] = previous


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {SERVER_START_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_reachable(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _find_pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        candidate = root / name
        if candidate.exists():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server whose role may create and drop databases."""
    env = os.environ.get("PANCHRO_TEST_DATABASE_URL")
    if env:
        if not _postgres_reachable(env):
            pytest.fail(f"PANCHRO_TEST_DATABASE_URL is set but PostgreSQL does not answer: {env}")
        yield env
        return
    if _postgres_reachable(DEFAULT_POSTGRES_URL):
        yield DEFAULT_POSTGRES_URL
        return
    initdb, postgres = _find_pg_binary("initdb"), _find_pg_binary("postgres")
    if not (initdb and postgres):
        pytest.skip("no PostgreSQL: set PANCHRO_TEST_DATABASE_URL or install postgresql")
    if os.geteuid() == 0:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 and initdb refuses to run as root")
    with tempfile.TemporaryDirectory(prefix="panchro-pg-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        proc = subprocess.Popen(
            [postgres, "-D", str(data), "-p", str(port), "-k", tmp, "-h", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, proc, "private PostgreSQL")
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_admin_url: str) -> Iterator[object]:
    """A callable that creates a new empty PostgreSQL database and returns its URL.

    Every database it creates is dropped at the end of the test session.
    """
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create() -> str:
        name = f"panchro_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)

    yield create

    def drop(name: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    # Each DROP DATABASE waits for a checkpoint of the whole server; dropped together,
    # the drops share a few checkpoints instead of one each.
    with ThreadPoolExecutor(max_workers=DROP_THREADS) as pool:
        list(pool.map(drop, created))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_database_factory: object) -> str:
    """URL of a fresh, empty PostgreSQL database for one test."""
    assert callable(postgres_database_factory)
    url: str = postgres_database_factory()
    return url


# --------------------------------------------------------------------------- Redis


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of a Redis server (without a database number) that the tests may use.

    Under pytest-xdist, every test process but the first gets a private server: the tests
    number their Redis databases 1-15 and flush them, which two processes sharing one
    server would do to each other.
    """
    env = os.environ.get("PANCHRO_TEST_REDIS_URL")
    private = os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0"
    if env and not private:
        if not _redis_reachable(env):
            pytest.fail(f"PANCHRO_TEST_REDIS_URL is set but Redis does not answer: {env}")
        yield env.rsplit("/", 1)[0] if env.count("/") > 2 else env
        return
    if not private and _redis_reachable(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL.rsplit("/", 1)[0]
        return
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("no Redis: set PANCHRO_TEST_REDIS_URL or install redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="panchro-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, proc, "private Redis")
            yield f"redis://127.0.0.1:{port}"
        finally:
            _stop(proc)


_redis_db_counter = iter(range(1, 16))


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """URL of an emptied Redis database (numbers 1-15 in turn) for one test."""
    import redis

    number = next(_redis_db_counter, None)
    if number is None:
        globals()["_redis_db_counter"] = iter(range(2, 16))
        number = 1
    url = f"{redis_server_url}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def s3_endpoint_url() -> Iterator[str]:
    """Endpoint URL of a real S3 API over HTTP: the given one, or a private moto server."""
    env = os.environ.get("PANCHRO_TEST_S3_ENDPOINT_URL")
    if env:
        yield env
        return
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("no S3 endpoint: set PANCHRO_TEST_S3_ENDPOINT_URL or install moto[server]")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region, so boto3 never looks for real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3_bucket(s3_endpoint_url: str, s3_credentials: None) -> Iterator[str]:
    """Name of a new, empty bucket on the S3 endpoint; emptied and removed afterwards."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    name = f"panchro-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})
    client.delete_bucket(Bucket=name)
