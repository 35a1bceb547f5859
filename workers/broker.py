"""What panchro knows about kombu's Redis transport, in one place.

Celery and kombu hide the broker behind messages and queues; a few things panchro does need
to look below that, and they are all here:

- the queue names and the transport options that make redelivery prompt
  (``unacked_restore_interval``);
- the message priorities (:data:`PRIORITY_STEPS`, :func:`message_priority`,
  :func:`queue_keys`) and the small values shared through Redis (:func:`write_setting`);
- where a queue's messages are: one Redis list per priority step, kombu publishing with
  ``LPUSH`` and consuming with ``BRPOP`` (so the right end is the front), and the
  ``unacked`` hash (with ``unacked_index``, the time of each delivery) that holds what a
  worker took and has not acknowledged (:func:`read_queue`, :func:`restore_in_front`,
  :func:`unacked_tags`);
- a message's envelope and its body encoding (:func:`message_body`);
- the Redis commands of a publication (kombu's publish batches, which
  :func:`recording` records instead of running) and Redis's Pub/Sub backlog
  (:class:`Subscribers`).

Why in ``workers`` and why both sides import it: the workers need it (their transport and
their redelivery), and so does the scheduler (sending, the reaper); the scheduler may import
no other module of ``workers`` than this one and ``workers.names``. So it imports nothing
but the standard library and kombu's exceptions: no torch, no model, not even kombu's Redis
transport (150 ms), which only :mod:`workers.redelivery` subclasses, with the helpers here.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from kombu.exceptions import OperationalError

__all__ = [
    "COLORIZE_QUEUE",
    "PRIORITY_STEPS",
    "PRIORITY_TRANSPORT_OPTIONS",
    "REDELIVERY_TRANSPORT_OPTIONS",
    "RESTORE_INTERVAL_S",
    "SCHEDULER_QUEUE",
    "PublishRecorder",
    "QueueContents",
    "Subscribers",
    "batch_publish_problem",
    "broker_errors",
    "is_redis",
    "message_body",
    "message_priority",
    "push_batch",
    "queue_keys",
    "read_setting",
    "read_queue",
    "recording",
    "restore_in_front",
    "unacked_tags",
    "write_setting",
]

logger = logging.getLogger(__name__)

#: Queue the colorize tasks go to; GPU workers consume only this one.
COLORIZE_QUEUE: Final = "colorize"
#: Queue the periodic dispatch task goes to; ``panchro scheduler`` consumes it.
SCHEDULER_QUEUE: Final = "scheduler"
#: Seconds between two sweeps of a worker for messages whose visibility timeout has
#: passed (unacknowledged messages of a worker that died); kombu's default is 10 s with a
#: scan on every tenth sweep only (docs/workers.md has the measurements).
RESTORE_INTERVAL_S: Final = 5
#: Broker transport options that make a dead worker's message come back within
#: ``RESTORE_INTERVAL_S`` seconds of its visibility timeout instead of up to 100 s later.
REDELIVERY_TRANSPORT_OPTIONS: Final[dict[str, int]] = {
    "unacked_restore_interval": RESTORE_INTERVAL_S,
    "unacked_restore_throttle": 1,
}
#: Message priorities that get a Redis list of their own (kombu's ``priority_steps``): one
#: per priority, 0 to 9. A worker's ``BRPOP`` names the lists in this order and takes
#: from the first that holds a message, so priority 0 is served first.
PRIORITY_STEPS: Final = tuple(range(10))
#: Broker transport options of the priority lists; producers, workers, the reaper and
#: Flower must all use the same steps, or some lists are never read.
PRIORITY_TRANSPORT_OPTIONS: Final[dict[str, list[int]]] = {"priority_steps": list(PRIORITY_STEPS)}
#: Separator between a queue's name and its priority in kombu's list names.
PRIORITY_SEPARATOR: Final = "\x06\x16"
#: Bytes of events a Pub/Sub subscriber may leave unread before sending waits for it.
SUBSCRIBER_BACKLOG_BYTES: Final = 2 * 2**20
#: Seconds a lagging subscriber may read nothing before sending stops waiting for it.
SUBSCRIBER_STALL_S: Final = 2.0
#: Seconds between two looks at the subscribers' backlog while waiting.
_SUBSCRIBER_POLL_S: Final = 0.01


def is_redis(connection: Any) -> bool:
    """Tell whether a kombu connection goes to Redis.

    Args:
        connection: A kombu connection, or None.

    Returns:
        True for kombu's Redis transport (and panchro's subclass of it).
    """
    return connection is not None and connection.transport.driver_type == "redis"


def message_priority(collection_priority: int) -> int:
    """Return the kombu message priority of a collection's tasks.

    kombu's Redis transport serves message priority 0 first; collections are served
    higher first. Collection priorities below 0 share the lowest step, above 9 the highest
    (the dispatcher still sends them in their order).

    Args:
        collection_priority: The collection's dispatch priority (``--priority``).

    Returns:
        The message priority, 0 (served first) to 9.
    """
    top = PRIORITY_STEPS[-1]
    return top - max(0, min(top, collection_priority))


def queue_keys(queue: str) -> tuple[str, ...]:
    """Return the Redis lists of a queue, in the order a worker takes from them.

    Args:
        queue: The queue's name.

    Returns:
        One list per priority step: the queue's own name for step 0, then
        ``NAME\\x06\\x16STEP``.
    """
    return tuple(f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue for step in PRIORITY_STEPS)


def broker_errors(connection: Any) -> tuple[type[BaseException], ...]:
    """Return the exceptions that mean the broker failed, for this connection's transport.

    Args:
        connection: A kombu connection.

    Returns:
        kombu's ``OperationalError``, ``OSError`` and the transport's connection and channel
        errors.
    """
    found: tuple[type[BaseException], ...] = (OperationalError, OSError)
    for name in ("connection_errors", "channel_errors"):
        found += tuple(getattr(connection, name, ()))
    return found


def message_body(envelope: dict[str, Any]) -> str:
    """Return the body text of a kombu envelope, decoded from base64 where it is.

    Args:
        envelope: The decoded JSON of a message as kombu stores it in Redis.

    Returns:
        The body (the task's JSON for Celery's messages).

    Raises:
        KeyError: If the envelope has no body.
        ValueError: If a base64 body is not valid base64 or UTF-8.
    """
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(body).decode("utf-8")
    return str(body)


@dataclass(frozen=True)
class QueueContents:
    """A queue's messages in Redis at one moment, as kombu stored them.

    Attributes:
        waiting: The envelopes (JSON text) waiting in the queue, every priority step.
        unacked: Each delivered, unacknowledged message by its delivery tag: kombu stores
            ``[envelope, exchange, routing key]`` as JSON text.
        delivered_at: The time of each delivery (seconds since the epoch), by tag.
    """

    waiting: tuple[Any, ...]
    unacked: dict[str, Any]
    delivered_at: dict[str, float]


def read_queue(app: Any, queue: str) -> QueueContents | None:
    """Read a queue's waiting messages and every unacknowledged one, in one transaction.

    The ``unacked`` hash is shared by every queue of the broker's database.

    Args:
        app: The Celery app.
        queue: The queue's name.

    Returns:
        What Redis holds, or None when the broker is not Redis.

    Raises:
        Exception: Whatever the connection raises when Redis cannot be reached.
    """
    with app.connection_for_write() as connection:
        if not is_redis(connection):
            return None
        channel = connection.default_channel
        lists = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
        pipe = channel.client.pipeline(transaction=True)
        for name in lists:
            pipe.lrange(name, 0, -1)
        pipe.hgetall(channel.unacked_key)
        pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
        replies = pipe.execute()
    waiting = tuple(raw for reply in replies[: len(lists)] for raw in reply)
    unacked = {_text(tag): value for tag, value in replies[len(lists)].items()}
    delivered_at = {_text(tag): float(score) for tag, score in replies[len(lists) + 1]}
    return QueueContents(waiting, unacked, delivered_at)


def write_setting(app: Any, key: str, value: str, ttl_s: float) -> bool:
    """Store a small value in the broker for ``ttl_s`` seconds, for every process to read.

    Args:
        app: The Celery app.
        key: The Redis key.
        value: The value.
        ttl_s: Seconds after which Redis forgets it unless it is written again.

    Returns:
        True if stored; False when the broker is not Redis.

    Raises:
        Exception: Whatever the connection raises when Redis cannot be reached.
    """
    with app.connection_for_write() as connection:
        if not is_redis(connection):
            return False
        connection.default_channel.client.set(key, value, px=max(1, int(ttl_s * 1000)))
    return True


def read_setting(app: Any, key: str) -> str | None:
    """Return a value that :func:`write_setting` stored, or None if none is (or not Redis).

    Args:
        app: The Celery app.
        key: The Redis key.

    Returns:
        The value, or None.

    Raises:
        Exception: Whatever the connection raises when Redis cannot be reached.
    """
    with app.connection_for_write() as connection:
        if not is_redis(connection):
            return None
        raw = connection.default_channel.client.get(key)
    return None if raw is None else _text(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def restore_in_front(qos: Any, tag: str) -> None:
    """Put a delivered, unacknowledged message back where the next ``BRPOP`` takes it.

    ``restore_by_tag(tag, leftmost=False)`` pushes on the right (next out); a message that
    was acknowledged or restored meanwhile is no longer in the ``unacked`` hash, and
    nothing happens.

    Args:
        qos: A kombu Redis channel's ``qos``.
        tag: The delivery tag.
    """
    qos.restore_by_tag(tag, leftmost=False)


def unacked_tags(channel: Any) -> list[str]:
    """Return the delivery tags a kombu channel delivered and has not acknowledged.

    Args:
        channel: A kombu virtual channel.

    Returns:
        The tags, oldest first.
    """
    qos = channel.qos
    # kombu marks acknowledged tags lazily ("dirty") and drops them on the next flush.
    qos._flush()
    return [str(tag) for tag in qos._delivered]


def batch_publish_problem(producer: Any) -> str | None:
    """Return why a producer's publications cannot be recorded and replayed, or None.

    Args:
        producer: A kombu producer.

    Returns:
        The reason, or None when it publishes to Redis through publish batches.
    """
    if not is_redis(producer.connection):
        return "the broker is not Redis"
    channel = producer.channel
    if not hasattr(channel, "create_publish_batch") or not hasattr(channel, "conn_or_acquire"):
        return "this kombu has no Redis publish batches"
    if not (hasattr(producer, "batch") and producer.supports_batch_publish):
        return "the Redis connection may replay a pipeline (retry options)"
    return None


class PublishRecorder:
    """Stands in for kombu's Redis publish batch: keeps the final commands, runs none.

    Attributes:
        calls: Per publication, the Redis commands as ``(name, args)``.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.calls: list[list[tuple[str, tuple[Any, ...]]]] = []

    def publish(self, message: Any, **kwargs: Any) -> Any:
        """Record one publication (kombu's batch interface)."""
        self.calls.append([])
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        """Record one Redis command of the current publication."""
        if not self.calls:
            raise RuntimeError("a Redis command was added outside a publication")
        self.calls[-1].append((name, args))

    def flush(self) -> None:
        """Nothing: the commands are kept, never sent."""

    def discard(self) -> None:
        """Forget what was recorded."""
        self.calls.clear()

    def close(self) -> None:
        """Nothing to close."""


@contextmanager
def recording(channel: Any) -> Iterator[PublishRecorder]:
    """Make the channel's next publish batch a recorder, for as long as the block runs.

    Args:
        channel: A kombu Redis channel.

    Yields:
        The recorder.
    """
    recorder = PublishRecorder(channel)
    # An instance attribute over the class's method, for this channel and this block only.
    channel.create_publish_batch = lambda max_size: recorder
    try:
        yield recorder
    finally:
        del channel.create_publish_batch


def push_batch(
    client: Any, queue_key: str, messages: Sequence[str], event_channel: str, events: Sequence[str]
) -> None:
    """Push messages onto a queue's list and publish their events, in one pipeline.

    Args:
        client: A redis-py client.
        queue_key: The Redis list of the queue (as kombu names it).
        messages: Envelopes in publication order.
        event_channel: The Pub/Sub channel of the events.
        events: Events, published after every message.
    """
    with client.pipeline(transaction=False) as pipe:
        # LPUSH key a b c stores what LPUSH a, LPUSH b, LPUSH c would: c at the head.
        pipe.lpush(queue_key, *messages)
        for event in events:
            pipe.publish(event_channel, event)
        pipe.execute()


class Subscribers:
    """Holds a burst of events back until Redis's Pub/Sub subscribers (Flower) catch up.

    Redis disconnects a subscriber whose unread events outgrow its output buffer limit
    (``client-output-buffer-limit pubsub``: 32 MiB, or 8 MiB for a minute), and Flower
    reads a few thousand events per second, fewer than template batches bring. So each
    batch waits while a subscriber has more than ``SUBSCRIBER_BACKLOG_BYTES`` unread,
    unless it has read nothing for ``SUBSCRIBER_STALL_S`` or ``CLIENT LIST`` is refused.
    """

    def __init__(self) -> None:
        self._stalled: set[str] = set()
        self._blind = False

    def wait(self, client: Any, refused: type[BaseException]) -> None:
        """Return once no subscriber that still reads has a large backlog.

        Args:
            client: A redis-py client.
            refused: The error Redis raises for a refused command.
        """
        lowest: dict[str, tuple[int, float]] = {}  # each laggard's least backlog, and when
        while not self._blind:
            try:
                clients = client.client_list(_type="pubsub")
            except refused as exc:
                self._blind = True
                logger.info("cannot see the event subscribers' backlog (%s); not pacing", exc)
                return
            now = time.monotonic()
            backlogs = [(str(item["id"]), int(item.get("omem", 0))) for item in clients]
            behind = [(name, size) for name, size in backlogs if size > SUBSCRIBER_BACKLOG_BYTES]
            behind = [(name, size) for name, size in behind if name not in self._stalled]
            if not behind:
                return
            for name, size in behind:
                if size < lowest.get(name, (size + 1, now))[0]:
                    lowest[name] = (size, now)
                elif now - lowest[name][1] >= SUBSCRIBER_STALL_S:
                    self._stalled.add(name)
                    logger.warning("event subscriber %s reads nothing; not waiting for it", name)
            time.sleep(_SUBSCRIBER_POLL_S)
