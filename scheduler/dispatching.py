"""Dispatch: move pending images to ``queued`` and send one colorize task for each.

One pass walks the active collections in priority order (higher first, then oldest),
skips those whose start window has not opened (:mod:`scheduler.windows`), and queues each
one's pending images, oldest first, in batches::

    transaction:  lock; room = max_in_flight - queued images; queue_pending(room)  (commit)
    send:         one message per image, carrying its collection's priority, the whole
                  batch in one broker round trip, on a
                  background thread while the next batch is queued
    on failure:   unqueue the images whose messages were not sent and the batch queued
                  meanwhile  (commit), then raise

A pass first makes ``active`` again every ``done`` collection that has images to do (a
registration that committed while the previous pass completed it), then marks ``done``
every active collection none of whose images is pending, queued or running (all done,
failed or skipped); registering new work or a retry makes it active again.

The messages carry their collection's priority, and a worker takes the next message from
the highest priority that holds one (``workers.broker.message_priority``): a collection
submitted behind thousands of queued images of a lower one overtakes them as soon as this
pass sends its first batch, not after the queue in front of it has drained.

Back-pressure is counted in the catalog: at most ``max_in_flight`` images are ``queued``
(sent but not yet claimed by a worker) at any time, over all collections. Workers claim
images (``queued -> running``), which frees room for the next pass.

Safe with several dispatchers at once: queueing is a conditional UPDATE in ``catalog``,
so no image is queued, and hence sent, by two of them; and the count-and-queue step runs
under a lock, so together they never exceed ``max_in_flight``.

The images are committed as ``queued`` before their messages are sent. The other order
could let a worker receive a message before the commit, find the image still pending and
drop the message, leaving the image queued with no message. If the dispatcher dies
between the commit and the send, its images stay queued until the periodic pass finds
the broker empty and gives them back (``scheduler.periodic``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from sqlalchemy.orm import Session, sessionmaker

from catalog import (
    CollectionStatus,
    complete_collection,
    count_in_flight,
    list_collections,
    queue_pending,
    reopen_collections,
    transaction,
    unqueue,
)
from scheduler._queries import lock_dispatch, relative_paths
from scheduler.errors import BrokerUnavailable
from scheduler.flight import room as free_room
from scheduler.windows import window_opens_at

logger = logging.getLogger(__name__)

#: Images queued per transaction and sent per broker round.
DISPATCH_BATCH_SIZE = 1_000


@dataclass(frozen=True)
class TaskRequest:
    """One colorize task to send.

    Attributes:
        image_id: The catalog image; the task's only argument.
        collection_id: Its collection's id.
        collection: Its collection's name.
        relative_path: Its source path below the collection's source.
        priority: Its collection's priority (higher is sent and served first).
    """

    image_id: int
    collection_id: int
    collection: str
    relative_path: str
    priority: int = 0

    @property
    def argsrepr(self) -> str:
        """How the task's arguments appear in Flower: the id, collection and source."""
        return f"({self.image_id}, collection={self.collection!r}, source={self.relative_path!r})"


#: Sends a batch of tasks, all or nothing as far as it can tell. It raises
#: ``BrokerUnavailable`` (with ``sent`` = messages accepted before the failure) when the
#: broker cannot be reached; see ``scheduler.sending.celery_sender``.
Send = Callable[[Sequence[TaskRequest]], None]


@dataclass(frozen=True)
class CollectionDispatch:
    """What one pass did for one active collection.

    Attributes:
        collection_id: The collection's id.
        name: Its name.
        sent: Tasks sent for it in this pass.
        opens_at: When its start window opens, if the window held it back in this pass.
    """

    collection_id: int
    name: str
    sent: int
    opens_at: datetime | None = None

    @property
    def held(self) -> bool:
        """Whether its start window kept it from being dispatched."""
        return self.opens_at is not None


@dataclass(frozen=True)
class DispatchReport:
    """What one dispatch pass did.

    Attributes:
        sent: Tasks sent, over all collections.
        in_flight: Images queued (sent, not yet claimed) when the pass ended.
        max_in_flight: The limit the pass worked to.
        collections: Every active collection the pass looked at, in dispatch order;
            the walk stops at the first collection that found no room left, so later
            ones are not listed.
    """

    sent: int
    in_flight: int
    max_in_flight: int
    collections: tuple[CollectionDispatch, ...]

    @property
    def full(self) -> bool:
        """Whether the broker holds as many tasks as allowed."""
        return self.in_flight >= self.max_in_flight

    def sent_for(self, collection_id: int) -> int:
        """Return the tasks sent for one collection.

        Args:
            collection_id: The collection.

        Returns:
            The number sent in this pass (0 if it was not looked at).
        """
        return sum(c.sent for c in self.collections if c.collection_id == collection_id)

    def held_for(self, collection_id: int) -> datetime | None:
        """Return when a collection's window opens if it held it back, else None.

        Args:
            collection_id: The collection.

        Returns:
            The opening moment, or None.
        """
        for item in self.collections:
            if item.collection_id == collection_id:
                return item.opens_at
        return None


@dataclass(frozen=True)
class _Active:
    id: int
    name: str
    opens_at: datetime | None
    priority: int = 0


def dispatch(
    sessions: sessionmaker[Session],
    send: Send,
    *,
    max_in_flight: int,
    now: datetime | None = None,
    tz: tzinfo | None = None,
    batch_size: int = DISPATCH_BATCH_SIZE,
) -> DispatchReport:
    """Run one dispatch pass (see the module docstring).

    Args:
        sessions: The catalog's session factory.
        send: Sends a batch of tasks (``scheduler.sending.celery_sender(app)``).
        max_in_flight: Most images queued at once, over all collections.
        now: The moment of the pass (aware), for the start windows; None means now.
        tz: The local time zone of ``--not-before`` times; None means this machine's.
        batch_size: Images queued per transaction and sent per broker round.

    Returns:
        What the pass did.

    Raises:
        BrokerUnavailable: If sending failed; the unsent images of the batch are back to
            ``pending`` and the next pass sends them. Batches sent before stay sent.
        DatabaseUnavailable: If the catalog cannot be reached.
        ValueError: If ``max_in_flight`` or ``batch_size`` is not positive.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    now = now or datetime.now(UTC)
    with transaction(sessions) as db:
        reopen_collections(db)
        active = [
            _Active(c.id, c.name, window_opens_at(c.not_before, c.updated_at, tz=tz), c.priority)
            for c in list_collections(db, statuses=[CollectionStatus.ACTIVE])
        ]
        # A collection with nothing pending, queued or running is done (one indexed
        # NOT EXISTS each); new work from a scan or a retry makes it active again.
        active = [c for c in active if not complete_collection(db, c.id)]
        in_flight = count_in_flight(db)
    done: list[CollectionDispatch] = []
    total = 0
    for collection in active:
        if collection.opens_at is not None and now < collection.opens_at:
            logger.debug(
                "collection %s (%s): held until %s",
                collection.id,
                collection.name,
                collection.opens_at.isoformat(),
            )
            done.append(CollectionDispatch(collection.id, collection.name, 0, collection.opens_at))
            continue
        sent, in_flight, room_left = _dispatch_collection(
            sessions, send, collection, max_in_flight=max_in_flight, batch_size=batch_size
        )
        total += sent
        done.append(CollectionDispatch(collection.id, collection.name, sent))
        if not room_left:
            break
    # A pass that sent nothing is the common case of a busy cluster: not worth a line.
    logger.log(
        logging.INFO if total else logging.DEBUG,
        "dispatch pass: sent %d tasks, %d of %d in flight",
        total,
        in_flight,
        max_in_flight,
    )
    return DispatchReport(
        sent=total, in_flight=in_flight, max_in_flight=max_in_flight, collections=tuple(done)
    )


def _dispatch_collection(
    sessions: sessionmaker[Session],
    send: Send,
    collection: _Active,
    *,
    max_in_flight: int,
    batch_size: int,
) -> tuple[int, int, bool]:
    """Queue and send one collection's pending images while there is room.

    Returns:
        Tasks sent, images in flight afterwards, and whether room is left.
    """
    sent = 0
    with _Sending(sessions, send) as sending:
        while True:
            with transaction(sessions) as db:
                lock_dispatch(db)
                in_flight, room = free_room(db, max_in_flight)
                ids = queue_pending(db, collection.id, min(room, batch_size)) if room > 0 else []
                paths = relative_paths(db, ids)
            requests = [
                TaskRequest(
                    image_id,
                    collection.id,
                    collection.name,
                    paths.get(image_id, ""),
                    collection.priority,
                )
                for image_id in ids
            ]
            # The previous batch was sent while this one was queued; if it failed, this
            # one goes back to pending with it.
            sent += sending.finish(also_unqueue=requests)
            if room <= 0:
                return sent, in_flight, False
            in_flight += len(ids)
            if not ids:
                return sent, in_flight, True
            sending.start(requests)
            logger.debug(
                "collection %s (%s): sending %d tasks (%d in flight)",
                collection.id,
                collection.name,
                len(ids),
                in_flight,
            )
            if len(ids) < min(room, batch_size):
                # Fewer pending images than asked for: the collection is drained.
                sent += sending.finish()
                return sent, in_flight, in_flight < max_in_flight


class _Sending:
    """Sends one batch at a time on a background thread, while the next is queued.

    Sending a batch costs the producer almost as much as queueing it in the catalog, and
    while the catalog's transaction waits for the database the interpreter is free:
    overlapping the two shortened a pass of 100,000 images by a fifth. Batches still go
    to the broker one after the other and in order, and a batch counts as sent only once
    :meth:`finish` has seen it through.
    """

    def __init__(self, sessions: sessionmaker[Session], send: Send) -> None:
        self._sessions = sessions
        self._send = send
        self._pool: ThreadPoolExecutor | None = None
        self._current: tuple[Future[None], Sequence[TaskRequest]] | None = None

    def __enter__(self) -> _Sending:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._current is not None:
                # Leaving on an error of the pass (the catalog, Ctrl-C): see the batch
                # through (or back to pending) before that error goes on.
                try:
                    self.finish()
                except BaseException as exc:
                    logger.warning("sending the last batch failed as well: %s", exc)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def start(self, requests: Sequence[TaskRequest]) -> None:
        """Start sending a batch; the previous one must have been finished."""
        assert self._current is None, "finish() the previous batch first"
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panchro-send")
        self._current = (self._pool.submit(self._send, requests), requests)

    def finish(self, also_unqueue: Sequence[TaskRequest] = ()) -> int:
        """Wait for the batch being sent, if any, and return how many tasks it sent.

        Args:
            also_unqueue: Images queued meanwhile, returned to pending too if it failed.

        Returns:
            The number of tasks sent (0 if no batch was on its way).

        Raises:
            BrokerUnavailable: If the broker refused the batch; the images whose messages
                were not sent, and ``also_unqueue``, are back to pending.
        """
        if self._current is None:
            return 0
        future, requests = self._current
        try:
            future.result()
        except BaseException as exc:
            self._current = None
            # After Ctrl-C this waits for the send to end: if it went through, its
            # images stay queued.
            failed = future.exception() is not None
            _unqueue_unsent(
                self._sessions, [*requests, *also_unqueue] if failed else also_unqueue, exc
            )
            raise
        self._current = None
        _log_queued(requests)
        return len(requests)


def _log_queued(requests: Sequence[TaskRequest]) -> None:
    """One line per image whose task reached the broker: its change to ``queued``."""
    if not logger.isEnabledFor(logging.INFO):
        return  # a pass of 100,000 images spends no time on lines nobody reads
    for request in requests:
        logger.info(
            "collection %s image %s: queued (%s)",
            request.collection,
            request.image_id,
            request.relative_path,
            extra={
                "collection": request.collection,
                "collection_id": request.collection_id,
                "image_id": request.image_id,
                "status": "queued",
            },
        )


def _unqueue_unsent(
    sessions: sessionmaker[Session], requests: Sequence[TaskRequest], exc: BaseException
) -> None:
    """Return the images of failed or abandoned sends to pending, then let ``exc`` go on."""
    if not requests:
        return
    # Whatever stopped the send (the broker, a bug, Ctrl-C), the images whose messages
    # did not go out must not stay queued: nothing would ever claim them.
    accepted = exc.sent if isinstance(exc, BrokerUnavailable) else 0
    unsent = [request.image_id for request in requests[accepted:]]
    with transaction(sessions) as db:
        back = unqueue(db, unsent)
    collection = requests[0].collection
    logger.warning(
        "collection %s: sending failed after %d of %d tasks; %d images back to pending: %s",
        collection,
        accepted,
        len(requests),
        back,
        exc,
    )
    if isinstance(exc, BrokerUnavailable):
        raise BrokerUnavailable(
            f"{exc}; {back} images of collection {collection!r} went back to pending",
            sent=accepted,
        ) from exc
