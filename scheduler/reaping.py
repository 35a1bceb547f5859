"""The reaper: hand back what no live worker holds, without waiting for a visibility timeout.

Redis hands a delivered message to another worker only when its visibility timeout has
passed (an hour by default), and an image stays ``running`` for as long as its try is
open. When a worker vanishes (its host crashed, it was killed and not restarted, its
connection broke and it never came back) both would wait that long. Before each dispatch
pass, :func:`reap` compares what the catalog and the broker say is in flight with what
the live workers say they hold, and hands back the difference:

1. It reads the broker in one transaction: the colorize messages waiting in the queue
   and the ones delivered but not acknowledged (kombu's ``unacked`` hash, with the time
   of delivery in ``unacked_index``).
2. It reads the catalog's ``running`` images (each with the task id of its try).
3. It asks every live worker, in one broadcast (``inspect query_task``, a short
   timeout), which of the task ids of (1) and (2) it holds: reserved, running, or
   waiting for a retry. No reply at all means nothing can be told (the broker is
   failing, or every worker is restarting), and the reaper stops there.
4. A delivered message that no live worker holds and that was delivered more than
   ``grace`` seconds ago is put back at the front of its queue, with its task id: its
   image, still ``running`` under that id, is taken over by the worker that receives it.
5. A running image whose task no live worker holds, whose message is not waiting
   either, and whose try started more than ``grace`` seconds ago is given up: the try
   is closed as ``lost`` and the image goes back to ``pending`` for this pass to send.

The scheduler hands a task back only when two passes in a row found nobody holding it
(``suspects``), so a worker that is slow to answer once loses nothing.

The grace period covers the moments in which a message or a claim is in flight between
two places (just popped from the queue, just claimed): a worker reports a task from the
moment it receives its message until it has acknowledged it, and claims happen inside the
task, so an image claimed seconds ago is never taken from a live worker. A worker that
does not answer within the timeout is taken for dead; getting that wrong costs a second
try at the image, whose results cannot overwrite each other in the catalog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog import Image, ImageStatus, Released, get_collection, release_lost, transaction
from scheduler.errors import BrokerUnavailable
from workers.broker import message_body, read_queue, restore_in_front
from workers.names import COLORIZE

__all__ = [
    "INSPECT_TIMEOUT_S",
    "REAP_AFTER_S",
    "BrokerSnapshot",
    "Delivery",
    "ReapReport",
    "StaleRelease",
    "held_task_ids",
    "read_broker",
    "reap",
    "release_stale",
]

logger = logging.getLogger(__name__)

#: Seconds a message must have been delivered, or a try running, before the reaper may
#: hand it back when no live worker reports holding it.
REAP_AFTER_S = 30.0
#: Seconds the reaper waits for the workers' answers to its broadcast.
INSPECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Delivery:
    """A colorize message delivered to a worker and not yet acknowledged.

    Attributes:
        tag: kombu's delivery tag (the key of the ``unacked`` hash).
        task_id: The task's id.
        image_id: The image named in the task, if it could be read.
        delivered_at: When it was delivered (seconds since the epoch).
    """

    tag: str
    task_id: str
    image_id: int | None
    delivered_at: float


@dataclass(frozen=True)
class BrokerSnapshot:
    """The colorize messages of the broker at one moment.

    Attributes:
        waiting: How many colorize messages wait in the queue.
        waiting_task_ids: Task ids of the messages waiting in the queue.
        waiting_image_ids: Image ids of the messages waiting in the queue.
        delivered: The messages delivered and not acknowledged.
    """

    waiting: int = 0
    waiting_task_ids: frozenset[str] = frozenset()
    waiting_image_ids: frozenset[int] = frozenset()
    delivered: tuple[Delivery, ...] = ()

    @property
    def image_ids(self) -> frozenset[int]:
        """Images that have a message in the broker, waiting or delivered."""
        return self.waiting_image_ids | {
            d.image_id for d in self.delivered if d.image_id is not None
        }


@dataclass(frozen=True)
class ReapReport:
    """What one reaper pass did.

    Attributes:
        answered: Workers that answered the broadcast (empty: nothing was decided).
        restored: Delivered messages put back in front of the queue.
        released: Running images given back (to pending, or failed at the cap).
    """

    answered: frozenset[str] = frozenset()
    restored: int = 0
    released: Released = field(default_factory=lambda: Released(requeued=0, failed=0))


def _decode(message: Any) -> tuple[str | None, int | None]:
    """Return the task id and image id of a kombu message (its JSON text or its dict)."""
    try:
        if not isinstance(message, dict):
            message = json.loads(message)
        headers = message.get("headers") or {}
        if headers.get("task") != COLORIZE:
            return None, None
        args = json.loads(message_body(message))[0]
        return str(headers.get("id")), int(args[0])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None, None


def read_broker(app: Any) -> BrokerSnapshot | None:
    """Read the broker's colorize messages, waiting and delivered, in one transaction.

    Args:
        app: The Celery app.

    Returns:
        The snapshot, or None when the broker cannot tell (not Redis, or unreachable).
    """
    queue = app.amqp.router.route({}, COLORIZE)["queue"].name
    try:
        contents = read_queue(app, queue)
    except Exception as exc:  # noqa: BLE001 - no answer is only a reason to wait
        logger.debug("cannot read the broker's messages: %s", exc)
        return None
    if contents is None:
        return None
    waiting = [_decode(raw) for raw in contents.waiting]
    delivered = []
    for tag, value in contents.unacked.items():
        # kombu stores [message, exchange, routing key].
        try:
            stored = json.loads(value)
        except ValueError:
            continue
        task_id, image_id = _decode(stored[0] if isinstance(stored, list) and stored else stored)
        if task_id is not None:
            when = contents.delivered_at.get(tag, 0.0)
            delivered.append(Delivery(tag, task_id, image_id, when))
    return BrokerSnapshot(
        waiting=len(waiting),
        waiting_task_ids=frozenset(t for t, _ in waiting if t is not None),
        waiting_image_ids=frozenset(i for _, i in waiting if i is not None),
        delivered=tuple(delivered),
    )


def held_task_ids(
    app: Any, task_ids: Iterable[str], *, timeout: float = INSPECT_TIMEOUT_S
) -> tuple[frozenset[str], frozenset[str]] | None:
    """Ask the live workers which of these tasks they hold (reserved, running, retrying).

    Args:
        app: The Celery app.
        task_ids: The task ids to ask about.
        timeout: Seconds to wait for answers.

    Returns:
        The names of the workers that answered and the task ids they hold, or None when
        no worker answered.
    """
    ids = sorted(set(task_ids))
    try:
        replies = app.control.inspect(timeout=timeout).query_task(*ids)
    except Exception as exc:  # noqa: BLE001 - no answer is only a reason to wait
        logger.debug("cannot ask the workers what they hold: %s", exc)
        return None
    if not replies:
        return None
    held = {task_id for tasks in replies.values() for task_id in (tasks or {})}
    return frozenset(replies), frozenset(held)


def _restore(app: Any, deliveries: Iterable[Delivery]) -> int:
    """Put delivered messages back at the front of their queue; return how many."""
    count = 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for delivery in deliveries:
            restore_in_front(qos, delivery.tag)
            logger.warning(
                "image %s: message %s was delivered to a worker that no longer holds it; "
                "requeued in front",
                delivery.image_id,
                delivery.task_id,
            )
            count += 1
    return count


def reap(
    app: Any,
    sessions: sessionmaker[Session],
    *,
    grace: float = REAP_AFTER_S,
    timeout: float = INSPECT_TIMEOUT_S,
    suspects: set[str] | None = None,
) -> ReapReport:
    """One reaper pass (see the module's text).

    Args:
        app: The Celery app.
        sessions: The catalog.
        grace: Seconds a delivery or a try must be old before it can be handed back.
        timeout: Seconds to wait for the workers' answers.
        suspects: Task ids that no live worker held at the previous pass; given, a task
            is handed back only when two passes in a row found nobody holding it (a
            worker slow to answer once loses nothing), and the set is updated in place.
            None hands back at the first pass.

    Returns:
        What was handed back.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    snapshot = read_broker(app)
    if snapshot is None:
        return ReapReport()
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=grace)
    with transaction(sessions) as db:
        running = db.execute(
            select(Image.task_id).where(
                Image.status == ImageStatus.RUNNING,
                Image.task_id.is_not(None),
                Image.started_at < cutoff,
            )
        ).scalars()
        running_ids = {task_id for task_id in running if task_id is not None}
    stale = [d for d in snapshot.delivered if d.delivered_at < now.timestamp() - grace]
    asked = (running_ids - snapshot.waiting_task_ids) | {d.task_id for d in stale}
    if not asked:
        return ReapReport()
    answer = held_task_ids(app, asked, timeout=timeout)
    if answer is None:
        logger.info("reaper: no worker answered; nothing handed back")
        return ReapReport()
    answered, held = answer
    unheld = asked - held
    if suspects is not None:
        confirmed = unheld & suspects
        suspects.clear()
        suspects.update(unheld)
        unheld = confirmed
    lost = [d for d in stale if d.task_id in unheld]
    restored = _restore(app, lost) if lost else 0
    # A restored message takes its image over; the rest of the unheld tries are given up.
    given_up = unheld - {d.task_id for d in lost}
    keep = (asked | running_ids | snapshot.waiting_task_ids) - given_up
    with transaction(sessions) as db:
        released = release_lost(db, started_before=cutoff, held_task_ids=set(keep))
    return ReapReport(answered=answered, restored=restored, released=released)


@dataclass(frozen=True)
class StaleRelease:
    """What ``panchro retry NAME --stale`` did.

    Attributes:
        released: Running images given back (to pending, or failed at the cap).
        answered: Workers that answered; none means every running image was stale.
        held: Running images of the collection that live workers hold (left alone).
    """

    released: Released
    answered: frozenset[str]
    held: int


def release_stale(
    app: Any,
    sessions: sessionmaker[Session],
    collection: str,
    *,
    timeout: float = 2 * INSPECT_TIMEOUT_S,
) -> StaleRelease:
    """Give back a collection's running images that no live worker holds, now.

    Unlike :func:`reap` there is no grace period, and when no worker answers every
    running image of the collection is taken as stale (a person asked for it).

    Args:
        app: The Celery app.
        sessions: The catalog.
        collection: The collection's name.
        timeout: Seconds to wait for the workers' answers.

    Returns:
        What was given back.

    Raises:
        CollectionNotFound: If there is no such collection.
        BrokerUnavailable: If the broker cannot be reached to ask the workers.
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    with transaction(sessions) as db:
        collection_id = get_collection(db, collection).id
        running = db.execute(
            select(Image.task_id).where(
                Image.collection_id == collection_id,
                Image.status == ImageStatus.RUNNING,
                Image.task_id.is_not(None),
            )
        ).scalars()
        task_ids = {task_id for task_id in running if task_id is not None}
    snapshot = read_broker(app)
    if snapshot is None:
        raise BrokerUnavailable("cannot reach the broker to ask the workers which images they hold")
    answered: frozenset[str] = frozenset()
    held: frozenset[str] = frozenset()
    if task_ids:
        answer = held_task_ids(app, task_ids, timeout=timeout)
        if answer is not None:
            answered, held = answer
    keep = held | snapshot.waiting_task_ids
    with transaction(sessions) as db:
        released = release_lost(db, collection_id=collection_id, held_task_ids=set(keep))
    return StaleRelease(released=released, answered=answered, held=len(task_ids & keep))
