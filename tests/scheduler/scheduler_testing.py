"""Functions and constants shared by the scheduler tests (a uniquely named module)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from catalog import (
    Collection,
    Image,
    ImageStatus,
    ScannedImage,
    create_or_get_collection,
    register_images,
)
from workers.broker import COLORIZE_QUEUE, queue_keys

if TYPE_CHECKING:
    from scheduler import SubmitSummary

#: First bytes of a file that the scan recognises as each format.
MAGIC = {
    "jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 28,
    "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 24,
    "tif": b"II*\x00" + b"\x00" * 28,
    "bmp": b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little") + b"\x00" * 14,
}
#: Redis list of every image id the stand-in colorize task received, in order.
RECEIVED_KEY = "standin:received"
#: Redis list of the image ids the stand-in colorize task claimed.
CLAIMED_KEY = "standin:claimed"
#: Redis list of the number of queued images each time the stand-in task started.
IN_FLIGHT_KEY = "standin:in-flight"
#: Redis hash of image id -> the ``argsrepr`` the stand-in colorize task received.
ARGSREPR_KEY = "standin:argsrepr"
#: Folder of the scheduler tests, where ``standin_worker.py`` lives.
HERE = Path(__file__).resolve().parent


def write_images(root: Path, names: Iterable[str], *, extra: bytes = b"") -> list[Path]:
    """Write small files that a scan takes for images, their format chosen by extension.

    Args:
        root: The source folder (created if missing).
        names: Relative paths such as ``"album/p001.tif"``; unknown extensions get JPEG
            content.
        extra: Bytes appended to each file (changes its size and checksum).

    Returns:
        The paths written.
    """
    written = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        extension = name.rsplit(".", 1)[-1].lower()
        path.write_bytes(MAGIC.get(extension, MAGIC["jpg"]) + extra)
        written.append(path)
    return written


@dataclass(frozen=True)
class QueuedMessage:
    """One colorize message waiting in Redis."""

    task: str
    image_id: int
    argsrepr: str


def submit_night(
    sessions: sessionmaker[Session], folder: Path, names: Iterable[str], *, max_in_flight: int
) -> SubmitSummary:
    """Write originals under ``folder/scans`` and submit them as collection "night", unsent.

    Args:
        sessions: The catalog.
        folder: Holds ``scans`` (the originals) and ``colour`` (the output).
        names: The originals' names.
        max_in_flight: The submission's limit.

    Returns:
        What ``submit`` reports.
    """
    from scheduler import submit
    from storage.registry import open_storage

    source = folder / "scans"
    write_images(source, names)
    return submit(
        sessions,
        name="night",
        source=source,
        output=folder / "colour",
        storage=open_storage(source),
        send=None,
        max_in_flight=max_in_flight,
    )


def queued_messages(redis_url: str, queue: str = COLORIZE_QUEUE) -> list[QueuedMessage]:
    """Decode every message waiting in a queue, in the order workers take them."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [decode_message(item) for item in waiting_in_order(client, queue)]
    finally:
        client.close()


def waiting_in_order(client: redis.Redis, queue: str = COLORIZE_QUEUE) -> list[bytes]:
    """Return the raw messages waiting in a queue's priority lists, next one first."""
    # kombu pushes on the left and pops on the right, from the first list that has one.
    return [item for key in queue_keys(queue) for item in reversed(client.lrange(key, 0, -1))]


def pop_next(client: redis.Redis, queue: str = COLORIZE_QUEUE) -> bytes | None:
    """Take the message a worker would take next (what kombu's ``BRPOP`` does)."""
    for key in queue_keys(queue):
        raw = client.rpop(key)
        if raw is not None:
            return bytes(raw)
    return None


def decode_message(raw: Any) -> QueuedMessage:
    """Decode one task message as kombu's Redis transport stores it."""
    envelope = json.loads(raw)
    args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    headers = envelope["headers"]
    return QueuedMessage(headers["task"], int(args[0]), headers["argsrepr"])


def queue_length(redis_url: str, queue: str = COLORIZE_QUEUE) -> int:
    """Return the messages waiting in a queue, in all its priority lists."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.llen(key)) for key in queue_keys(queue))
    finally:
        client.close()


def statuses(sessions: sessionmaker[Session], collection: str | None = None) -> dict[str, str]:
    """Return relative path -> status value of every image (of one collection)."""
    query = select(Image.relative_path, Image.status).join(Collection)
    if collection is not None:
        query = query.where(Collection.name == collection)
    with sessions.begin() as db:
        return {path: ImageStatus(status).value for path, status in db.execute(query)}


def status_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Return the number of images in each status, over all collections."""
    query = select(Image.status, func.count()).group_by(Image.status)
    with sessions.begin() as db:
        return {ImageStatus(status).value: int(count) for status, count in db.execute(query)}


def ids_by_path(sessions: sessionmaker[Session], collection: str) -> dict[str, int]:
    """Return relative path -> image id of a collection's images."""
    query = (
        select(Image.relative_path, Image.id).join(Collection).where(Collection.name == collection)
    )
    with sessions.begin() as db:
        return {path: image_id for path, image_id in db.execute(query)}


def count_rows(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Return the number of collections and images."""
    with sessions.begin() as db:
        return {
            "collections": int(db.scalar(select(func.count()).select_from(Collection)) or 0),
            "images": int(db.scalar(select(func.count()).select_from(Image)) or 0),
        }


def image_rows(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Return every image as a dict of the columns a submission may change."""
    columns = (
        Image.id,
        Image.source_uri,
        Image.output_uri,
        Image.status,
        Image.source_checksum,
        Image.queued_at,
    )
    with sessions.begin() as db:
        rows = db.execute(select(*columns).order_by(Image.id)).all()
    return [dict(row._mapping) for row in rows]


def start_standin_worker(
    broker_url: str,
    database_url: str,
    log: Path,
    *,
    max_in_flight: int,
    interval: float,
    reap_after: float = 3600.0,
) -> subprocess.Popen[bytes]:
    """Start ``standin_worker.py``: a real Celery worker with beat and the dispatcher.

    Args:
        broker_url: The Redis broker.
        database_url: The catalog its dispatcher and stand-in task use.
        log: Where its output goes.
        max_in_flight: The dispatcher's limit.
        interval: Seconds between two dispatch passes.
        reap_after: The reaper's grace period. The stand-in task leaves its images
            running with nobody holding them, so by default it is longer than any test.

    Returns:
        The worker's process, leader of its own session (see :func:`stop_worker`).
    """
    env = dict(
        os.environ,
        STANDIN_BROKER_URL=broker_url,
        STANDIN_DATABASE_URL=database_url,
        STANDIN_MAX_IN_FLIGHT=str(max_in_flight),
        STANDIN_INTERVAL=str(interval),
        STANDIN_REAP_AFTER=str(reap_after),
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]),
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(HERE / "standin_worker.py")],
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker started by :func:`start_standin_worker`, its children included."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # the pool and beat children share the session of the worker
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pending_collection(
    sessions: sessionmaker[Session],
    name: str,
    count: int,
    *,
    priority: int = 0,
    not_before: str | None = None,
) -> list[int]:
    """Create a collection with ``count`` pending images; return their ids in order."""
    rows = [
        ScannedImage(
            source_uri=f"s3://scans/{name}/p{index:04d}.tif",
            relative_path=f"p{index:04d}.tif",
            output_uri=f"s3://colour/{name}/p{index:04d}.tif",
            size=100,
            checksum=f"etag-{index}",
            checksum_kind="etag",
        )
        for index in range(count)
    ]
    with sessions.begin() as db:
        collection, _ = create_or_get_collection(
            db,
            name,
            f"s3://scans/{name}",
            f"s3://colour/{name}",
            priority=priority,
            not_before=not_before,
        )
        register_images(db, collection.id, rows)
    ids = [image_id for _path, image_id in sorted(ids_by_path(sessions, name).items())]
    assert len(ids) == count
    return ids
