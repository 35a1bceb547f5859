"""Throw-away servers, waiting and catalog set-up, shared by the benchmark scripts.

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
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from migrations.runner import upgrade

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

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


def queue_folder(
    sessions: sessionmaker[Session],
    name: str,
    source: Path,
    names: list[str],
    output: Path,
    input_size: int,
) -> list[int]:
    """Register files of a local folder as a new collection and queue them at once.

    Args:
        sessions: The catalog.
        name: The collection's name, new in the catalog.
        source: Its source folder.
        names: The files of ``source`` to register (none: an empty collection).
        output: Its output folder; each copy goes to ``output / name``.
        input_size: The collection's input size.

    Returns:
        The images' ids, queued as a dispatch pass would.
    """
    from catalog import (
        ScannedImage,
        create_or_get_collection,
        queue_pending,
        register_images,
        transaction,
    )
    from storage import LocalStorage

    store = LocalStorage()
    rows = []
    for relative in names:
        info = store.stat(str(source / relative))
        rows.append(
            ScannedImage(
                source_uri=str(source / relative),
                relative_path=relative,
                output_uri=str(output / relative),
                size=info.size,
                checksum=info.checksum,
                checksum_kind=info.checksum_kind,
            )
        )
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(
            db, name, str(source), str(output), input_size=input_size
        )
        register_images(db, collection.id, rows)
        return queue_pending(db, collection.id, limit=len(rows))
