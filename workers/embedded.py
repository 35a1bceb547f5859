"""The embedded worker of ``panchro run``: one collection colorized in this process, no broker.

rq's ``SimpleWorker`` idea beside the Celery task: the same ``process_image()``, fed
from the catalog instead of a queue. Each round queues a batch of the collection's
pending images (``pending -> queued``), then claims and colorizes them in id order, one
by one or ``batch`` at a time (one forward of the network for each batch:
:mod:`workers.batches`), while the next originals are read and decoded on background
threads (:class:`workers.readahead.ReadAhead`), so the model never waits for storage::

    worker = EmbeddedWorker(WorkerRuntime(config), prefetch=2, batch=1)
    worker.recover(collection_id)       # hand back what an interrupted run left behind
    worker.work(collection_id, on_outcome=progress)    # until nothing is pending

Stopping with Ctrl-C hands the image being processed back as ``pending`` and the rest of
the round too, so running again resumes where it stopped and never redoes a finished
image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from catalog import (
    CatalogError,
    Claim,
    ImageStatus,
    queue_pending,
    release_claim,
    release_lost,
    transaction,
    unqueue,
    unqueue_stale,
)
from workers.batches import OnOutcome, process_batch
from workers.claiming import Handover
from workers.outcomes import Outcome
from workers.readahead import ReadAhead, StorageFor

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer
    from workers.runtime import WorkerRuntime

__all__ = ["DEFAULT_PREFETCH", "ROUND_SIZE", "EmbeddedWorker", "process_many"]

logger = logging.getLogger(__name__)

#: Images queued and handed to the model per round; the catalog is re-read between rounds.
ROUND_SIZE: Final = 500
#: Images read and decoded ahead while the model runs.
DEFAULT_PREFETCH: Final = 2


class EmbeddedWorker:
    """Colorizes the pending images of a collection in this process, reading ahead.

    Args:
        runtime: The model, stores and catalog of this process (``untrained`` and the node
            name come from its config, as for a Celery worker).
        prefetch: Images read and decoded ahead; 0 reads each one when its turn comes.
        round_size: Images queued per round.
        batch: Images per forward of the network; None for the runtime's
            (``WorkerRuntime.batch_size``).
    """

    def __init__(
        self,
        runtime: WorkerRuntime,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        round_size: int = ROUND_SIZE,
        batch: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.prefetch = prefetch
        self.round_size = round_size
        self.batch = batch

    def recover(self, collection_id: int) -> int:
        """Hand back what an interrupted run of this collection left running or queued.

        Args:
            collection_id: The collection.

        Returns:
            How many images were handed back.

        Raises:
            DatabaseUnavailable: If the catalog cannot be reached.
        """
        with transaction(self.runtime.sessions()) as db:
            released = release_lost(db, collection_id=collection_id)
            requeued = unqueue_stale(
                db, queued_before=datetime.now(UTC), collection_id=collection_id
            )
        count = released.requeued + released.failed + requeued
        if count:
            logger.info(
                "collection %s: resuming; %d interrupted, %d queued images handed back",
                collection_id,
                released.requeued + released.failed,
                requeued,
            )
        return count

    def work(self, collection_id: int, *, on_outcome: OnOutcome | None = None) -> None:
        """Colorize the collection's pending images, round after round, until none is left.

        Args:
            collection_id: The collection.
            on_outcome: Told each image's outcome as soon as it is known.

        Raises:
            DatabaseUnavailable: If the catalog cannot be reached.
            StorageUnavailable: If a store cannot be reached.
            WorkerSetupError: If this process cannot colorize the collection (other weights).
            KeyboardInterrupt: If interrupted; the round's images were handed back.
        """
        runtime = self.runtime
        sessions = runtime.sessions()
        colorizer = runtime.colorizer()
        device = runtime.device_label()
        while True:
            with transaction(sessions) as db:
                ids = queue_pending(db, collection_id, self.round_size)
            if not ids:
                return
            try:
                process_many(
                    ids,
                    sessions=sessions,
                    storage_for=runtime.storage_for,
                    colorizer=colorizer,
                    worker=runtime.config.node_name,
                    device=device,
                    untrained=runtime.config.untrained,
                    prefetch=self.prefetch,
                    batch=self.batch or runtime.batch_size(),
                    on_outcome=on_outcome,
                )
            finally:
                # Images of this round not reached (Ctrl-C, an unreachable store) go back.
                with transaction(sessions) as db:
                    unqueue(db, ids)


def process_many(
    image_ids: Iterable[int],
    *,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    worker: str,
    device: str | None = None,
    untrained: bool = False,
    prefetch: int = DEFAULT_PREFETCH,
    batch: int = 1,
    on_outcome: OnOutcome | None = None,
) -> list[Outcome]:
    """Colorize queued images in order, reading and decoding ahead while the model runs.

    The images go ``batch`` at a time through one forward of the network. Before each
    batch is processed, the next ``prefetch`` images (at least the next batch) are read
    and decoded on background threads; an original read ahead is used only if the catalog
    still has the same source and checksum. The transaction that records a batch done
    also claims the next batch (``workers.claiming.Handover``) and looks up the images to
    read after it: a batch costs the catalog two transactions, the first one three.

    Stops cleanly on Ctrl-C: the images being processed, and a next batch claimed ahead,
    are handed back as ``pending`` (their attempts closed), what was read ahead is
    dropped, and ``KeyboardInterrupt`` propagates. A failure that may pass (store or
    database unreachable) hands the unfinished images back as ``pending`` too, and
    propagates.

    Args:
        image_ids: Queued images of one collection, in the order to process them.
        sessions: The catalog's session factory.
        storage_for: Returns the store of a location.
        colorizer: The loaded model.
        worker: Host name recorded on each attempt.
        device: Device description; None for the model's.
        untrained: The weights are random.
        prefetch: Images read ahead; 0 reads each one when its turn comes.
        batch: Images per forward of the network.
        on_outcome: Told each image's outcome as soon as it is known.

    Returns:
        The outcome of every image, in order.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
        StorageUnavailable: If a store cannot be reached.
        KeyboardInterrupt: If interrupted.
    """
    ids = list(image_ids)
    batch = max(1, batch)
    ahead = max(prefetch, batch) if prefetch > 0 else 0
    read_ahead = None
    if ahead > 0:
        read_ahead = ReadAhead(storage_for, threads=prefetch, capacity=batch + ahead)
    outcomes: list[Outcome] = []

    def reads(first: int) -> list[int]:
        """What to start reading when the batch that begins at ``first`` is claimed."""
        return ids[first + 1 : first + batch + ahead] if ahead else []

    claimed: Handover | None = None
    handover: Handover | None = None
    try:
        for start in range(0, len(ids), batch):
            following = start + batch
            handover = None
            if following < len(ids):
                handover = Handover(ids[following : following + batch], read_ids=reads(following))
            outcomes += process_batch(
                ids[start:following],
                sessions=sessions,
                storage_for=storage_for,
                colorizer=colorizer,
                worker=worker,
                device=device,
                untrained=untrained,
                read_ahead=read_ahead,
                release_to=ImageStatus.PENDING,
                on_outcome=on_outcome,
                read_ids=reads(start),
                claimed=claimed,
                handover=handover,
            )
            claimed = handover
    except BaseException:
        # A batch claimed for the next call that never came goes back.
        for unused in (claimed, handover):
            if unused is not None and not unused.taken:
                _hand_back(sessions, unused.held())
        raise
    finally:
        if read_ahead is not None:
            read_ahead.close()
    return outcomes


def _hand_back(sessions: sessionmaker[Session], claims: Iterable[Claim]) -> None:
    """Release claims made ahead for a batch that was not reached, to ``pending``."""
    reason = "handed back unfinished: the run stopped before its turn"
    try:
        with transaction(sessions) as db:
            for claim in claims:
                release_claim(
                    db, claim.image_id, claim.attempt_id, reason=reason, to=ImageStatus.PENDING
                )
    except CatalogError as exc:
        # The next run hands them back (``EmbeddedWorker.recover``).
        logger.warning("could not hand back the images claimed ahead: %s", exc)
