"""Reading and decoding originals ahead of the model, so it never waits on storage.

:class:`ReadAhead` reads and decodes the originals a process will probably get next on
background threads, so the device does not wait on S3 or on decoding a large TIFF. It
never claims anything: a prefetched original is used only by the task for that image, and
only if its source and checksum are still the ones the catalog has. The embedded worker
of ``panchro run`` (``workers.embedded``) tells it which images come next.

While the model computes on the CPU (:meth:`ReadAhead.model_computing`), a read fetches
its bytes but holds its decoding until the model is done: the network's threads take
every core, and each of them waits for the slowest, so a decode beside them cost the
model more than the decode itself (``benchmarks/pipeline.py``: the worker's ``colorize()``
took 3 % longer than the bare loop's, and the same time with no read-ahead at all). Held,
the decode runs while the worker encodes, writes and records the image before, on the core
that work leaves free. On a GPU the host's cores are free during the forward, and nothing
is held.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from catalog import (
    Image,
    ImageStatus,
    get_images,
    next_queued,
)
from storage.base import Storage
from storage.errors import StorageError
from workers.colorizing import Original, read_original

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "READ_AHEAD_MAX_BYTES",
    "ReadAhead",
    "StorageFor",
]

logger = logging.getLogger(__name__)

#: Largest original read ahead, in bytes; bigger ones are read when their task comes.
READ_AHEAD_MAX_BYTES: Final = 1024 * 1024 * 1024
#: Images a process keeps read ahead at most (each one held decoded in memory).
READ_AHEAD_CAPACITY: Final = 2

#: How much nicer than the model's threads a read-ahead thread runs (Linux).
READ_AHEAD_NICENESS: Final = 10

#: Returns the store that holds a location (``file`` or ``s3`` scheme).
StorageFor = Callable[[str], Storage]


class ReadAhead:
    """Reads and decodes upcoming originals on background threads while the model runs.

    Nothing here changes the catalog: an entry is only a guess, keyed by image id, source
    and checksum, and :meth:`take` hands it out only to the image it was made for.

    Args:
        storage_for: Returns the store of a location.
        guess_next: After each claim, read the image most likely handed out next (a
            Celery worker, which cannot see its next message); otherwise only what
            :meth:`prefetch_in` is asked for.
        threads: Reads and decodes that may run at once.
        capacity: Entries kept; the oldest is dropped beyond it.
        max_bytes: Larger originals are not read ahead.
    """

    def __init__(
        self,
        storage_for: StorageFor,
        *,
        guess_next: bool = False,
        threads: int = 1,
        capacity: int = READ_AHEAD_CAPACITY,
        max_bytes: int = READ_AHEAD_MAX_BYTES,
    ) -> None:
        self.guess_next = guess_next
        self._storage_for = storage_for
        self._threads = threads
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._entries: OrderedDict[int, tuple[str, str | None, Future[Original]]] = OrderedDict()
        self._lock = threading.Lock()
        # Set while the model is not computing on the CPU: reads decode only then.
        self._model_idle = threading.Event()
        self._model_idle.set()
        self.hits = 0
        self.misses = 0

    @contextmanager
    def model_computing(self, on_cpu: bool) -> Iterator[None]:
        """Hold the reads' decoding while the model computes, if it computes on the CPU.

        Reads under way still fetch their bytes (a store's latency overlaps the model);
        each decodes once the block is left, however it is left. Only the thread that
        runs the model may use it, and not while it waits in :meth:`take`.

        Args:
            on_cpu: Whether the model runs on the CPU; on a GPU nothing is held.
        """
        if not on_cpu:
            yield
            return
        self._model_idle.clear()
        try:
            yield
        finally:
            self._model_idle.set()

    def prefetch_in(self, db: Session, image_ids: Sequence[int]) -> None:
        """Start reading images, in order, looked up in the caller's transaction.

        Those read already, or no longer expected to be processed, are left alone.

        Args:
            db: The caller's session (a claim's or a done's transaction).
            image_ids: The images, the first to be needed first.
        """
        wanted = [image_id for image_id in image_ids if image_id not in self._entries]
        if not wanted:
            return
        found = {image.id: image for image in get_images(db, wanted)}
        for image_id in wanted:
            if image_id in found:
                self._start(found[image_id])

    def after_claim(self, db: Session, collection_id: int, *, count: int = 1) -> None:
        """Told, in the claim's transaction, that images of a collection were claimed.

        If asked to guess, starts reading the images most likely handed out next: the
        queued ones with the lowest ids (the dispatcher queues and sends in id order, so
        their messages are at the head of the broker's queue, and a batching worker claims
        them first, ``catalog.claim_more``). They are looked up in the claim's
        transaction: no round trip of their own.

        Args:
            db: The claim's session.
            collection_id: The collection of the claimed images.
            count: How many were claimed together: as many are guessed (the next batch).
        """
        if not self.guess_next:
            return
        for image in next_queued(db, collection_id, max(1, count)):
            self._start(image)

    def _start(self, image: Image) -> None:
        """Submit the read of a catalog image (inside the caller's transaction)."""
        where = f"collection {image.collection_id} image {image.id}"
        if image.status not in (ImageStatus.PENDING, ImageStatus.QUEUED):
            return
        if image.source_size is not None and image.source_size > self._max_bytes:
            logger.debug("%s: %d bytes, too large to read ahead", where, image.source_size)
            return
        with self._lock:
            if image.id in self._entries:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._threads, thread_name_prefix="read-ahead", initializer=yield_to_the_model
                )
            key = (image.source_uri, image.source_checksum)
            future = self._executor.submit(
                _read, where, image.source_uri, self._storage_for, self._model_idle
            )
            self._entries[image.id] = (*key, future)
            while len(self._entries) > self._capacity:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                dropped.cancel()

    def waiting(self) -> list[int]:
        """Return the images read ahead or being read, oldest first.

        Returns:
            Their ids: a batching worker claims these first.
        """
        with self._lock:
            return list(self._entries)

    def take(self, image_id: int, source_uri: str, checksum: str | None) -> Original | None:
        """Hand out what was read ahead for an image, waiting if the read is under way.

        A read that has not started yet is cancelled instead: it waits behind another
        read, which may hang (a stuck object), and must not hold this image too.

        Args:
            image_id: The image being processed.
            source_uri: Its source now, according to the claim.
            checksum: Its source checksum now, according to the catalog.

        Returns:
            The original read ahead, or None when there is none, it is for another version
            of the source, or reading it failed (the caller then reads it itself and
            meets the failure where it is handled).
        """
        with self._lock:
            entry = self._entries.pop(image_id, None)
        if entry is None or entry[:2] != (source_uri, checksum):
            self.misses += 1
            return None
        if entry[2].cancel():
            # Not started: it waits behind another read, perhaps one that hangs on a stuck
            # object. The task reads its own original rather than wait for that one.
            logger.debug("image %s: its read-ahead had not started; reading it now", image_id)
            self.misses += 1
            return None
        try:
            prefetched = entry[2].result()
        except StorageError as exc:
            logger.debug("image %s: read-ahead failed (%s); reading it again", image_id, exc)
            self.misses += 1
            return None
        self.hits += 1
        return prefetched

    def close(self) -> None:
        """Drop every entry and stop the threads (a read under way finishes on its own)."""
        # A read held before its decoding must not hold its thread for good.
        self._model_idle.set()
        with self._lock:
            for _, _, future in self._entries.values():
                future.cancel()
            self._entries.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None


def yield_to_the_model() -> None:
    """Lower the calling thread's CPU priority below the model's threads (Linux only).

    The network's operators run on as many threads as the worker has cores, and each
    waits for the slowest: a read-ahead decoding on one of those cores while they run
    holds all of them up. At a lower priority it decodes in the gaps instead. Linux gives
    each thread its own nice value; elsewhere, or where it cannot be changed, nothing
    happens.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + READ_AHEAD_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except OSError as exc:
        logger.debug("read-ahead thread keeps its priority: %s", exc)


def _read(
    where: str, source_uri: str, storage_for: StorageFor, model_idle: threading.Event
) -> Original:
    original = read_original(storage_for(source_uri), source_uri, on_decode=model_idle.wait)
    logger.debug("%s: read ahead in %.2f s (waits for the model included)", where, original.seconds)
    return original
