"""Throw-away servers and waiting, shared by the benchmark scripts.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and
they import this module by its plain name.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from migrations.runner import upgrade

#: Seconds a private server may take to answer.
SERVER_START_S = 30.0
#: Seconds between two looks, unless the caller says otherwise.
POLL_S = 0.05


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, limit: float, poll: float = POLL_S) -> None:
    """Poll ``condition`` until it holds; exit the benchmark after ``limit`` seconds.

    Args:
        condition: Checked every ``poll`` seconds.
        what: What is waited for, for the message.
        limit: Seconds before giving up.
        poll: Seconds between two checks.
    """
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {limit:.0f} s")
        time.sleep(poll)


def pings(url: str) -> bool:
    """Whether the Redis server at ``url`` answers a PING."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@contextmanager
def private_redis(limit: float = SERVER_START_S) -> Iterator[str]:
    """Start a throw-away ``redis-server`` on a free loopback port, without persistence.

    Args:
        limit: Seconds it may take to answer.

    Yields:
        Its URL (database 0).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server found: set PANCHRO_BENCH_BROKER_URL")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="panchro-bench-redis-") as folder:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: proc.poll() is not None or pings(url), "redis-server", limit)
            if proc.poll() is not None:
                raise SystemExit("the private redis-server did not start")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create an empty PostgreSQL database migrated to head; drop it afterwards.

    Args:
        admin_url: A PostgreSQL URL whose role may create databases.

    Yields:
        The new database's URL.
    """
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"panchro_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
