"""Sending colorize tasks to the broker, a whole batch in one Redis round trip.

``celery_sender(app)`` returns the ``send`` callable that :func:`scheduler.dispatching.dispatch`
takes. It knows the task only by its name (``workers.names.COLORIZE``), so the producer
never imports the worker's code, torch or the model.

Each task costs Redis two commands: the message (``LPUSH`` on the queue's list) and the
``task-sent`` event that Flower shows (``PUBLISH`` on the event exchange's channel).
Celery's code spends about 100 µs per task building both, which capped dispatch at about
4,500 tasks per second. So, on Redis, each batch is sent from a template that Celery's own
code recorded (:mod:`scheduler.templates`): one ``LPUSH`` of all its messages and one
``PUBLISH`` per event, in one pipeline.

Why a recording, not messages written by hand: envelope, queue key (priority suffix, key
prefix), body encoding, event channel and headers come from the installed Celery and
kombu, and what a template cannot express falls back to the slow path rather than
producing messages no worker reads. Why not Celery's path tuned: one producer and one
pipeline per batch (the fallback) leave its per-message work, the cost that mattered.

Each message carries its collection's priority (``workers.broker.message_priority``),
which picks the Redis list it waits in; a batch of several priorities is sent as one run
per priority, each from its own template.

Celery's path is also taken when the broker is not Redis, when kombu has no publish
batches or may replay a pipeline (``retry_on_timeout``), and while a receiver listens to
Celery's publish signals, which the template path does not send. A batch's events wait for
Pub/Sub subscribers that lag behind, so that Redis does not cut Flower off
(:class:`workers.broker.Subscribers`).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kombu.exceptions import OperationalError

from scheduler.dispatching import Send, TaskRequest
from scheduler.errors import BrokerUnavailable
from scheduler.templates import COMMANDS_PER_MESSAGE, Template, record_template
from workers.broker import Subscribers, broker_errors, message_priority
from workers.names import COLORIZE

logger = logging.getLogger(__name__)


def celery_sender(app: Any, *, fast: bool = True) -> Send:
    """Return a ``send`` callable that sends colorize tasks with a Celery app.

    Each batch reuses one pooled producer and reaches Redis in one pipeline, built from a
    template that Celery's own code recorded for it (see the module docstring): workers
    and Flower see the messages and ``task-sent`` events (when the app's
    ``task_send_sent_event`` is on) that ``app.send_task`` would give. A batch is all or
    nothing as far as the producer can tell: if the pipeline fails, the error says
    ``sent=0`` and the batch returns to pending; a message that did reach the broker is
    then harmless (a worker finds its image not queued and drops it).

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        fast: Build each batch from a recorded template where possible; False sends
            every message through Celery's own code (about ten times slower).

    Returns:
        The callable; it raises ``BrokerUnavailable`` when the broker cannot be reached.
    """
    warned: list[str] = []
    subscribers = Subscribers()

    def send(requests: Sequence[TaskRequest]) -> None:
        if not requests:
            return
        sent = 0
        template: Template | None = None
        try:
            with app.producer_or_acquire() as producer:
                errors = broker_errors(producer.connection)
                try:
                    # One template per priority: the priority picks the message's list.
                    for priority, run in _by_priority(requests):
                        publisher = functools.partial(_publisher, priority=priority)
                        template = (
                            record_template(app, producer, publisher, warned) if fast else None
                        )
                        before = sent
                        if template is None:
                            for count in _send_with_celery(app, producer, run, priority):
                                sent = before + count
                        else:
                            # Rendered before the pipeline opens: it needs no broker.
                            payloads = template.render(run)
                            template.write(producer.channel, payloads, subscribers)
                            sent = before + len(run)
                except errors as exc:
                    raise BrokerUnavailable(
                        f"cannot send tasks to the broker: {exc}", sent=sent
                    ) from exc
        except (OperationalError, OSError) as exc:
            # Raised when no connection could be made at all.
            raise BrokerUnavailable(f"cannot reach the broker: {exc}", sent=sent) from exc
        how = "Celery's path" if template is None else "a template"
        logger.debug(
            "collection %s: sent %d tasks by %s", requests[0].collection, len(requests), how
        )

    return send


def _by_priority(requests: Sequence[TaskRequest]) -> Iterator[tuple[int, Sequence[TaskRequest]]]:
    """Cut a batch into runs of one message priority each, keeping its order."""
    start = 0
    for end in range(1, len(requests) + 1):
        if end == len(requests) or requests[end].priority != requests[start].priority:
            yield message_priority(requests[start].priority), requests[start:end]
            start = end


def _send_with_celery(
    app: Any, producer: Any, requests: Sequence[TaskRequest], priority: int
) -> Iterator[int]:
    """Send every message through Celery's own code, yielding how many have been sent.

    With kombu's publish batches the whole batch goes in one pipeline at the end, so the
    count is only yielded then; without them it is yielded after every message.
    """
    batched = hasattr(producer, "batch") and producer.supports_batch_publish
    publish = _publisher(app, producer, retry=False if batched else None, priority=priority)
    if batched:
        with producer.batch(max_size=COMMANDS_PER_MESSAGE * len(requests)):
            for request in requests:
                publish(str(uuid.uuid4()), request.image_id, request.argsrepr)
        yield len(requests)
        return
    for sent, request in enumerate(requests, start=1):
        publish(str(uuid.uuid4()), request.image_id, request.argsrepr)
        yield sent


def _publisher(
    app: Any, producer: Any, *, retry: bool | None, priority: int
) -> Callable[[str, int, str], None]:
    """Return a function that publishes one colorize task on ``producer`` with Celery.

    ``priority`` is kombu's message priority (0 is served first), not the collection's.
    """
    amqp = app.amqp
    queue = amqp.router.route({}, COLORIZE)["queue"]
    options = {
        "kwargsrepr": "{}",
        "create_sent_event": bool(app.conf.task_send_sent_event),
        "ignore_result": True,
    }
    route = {"priority": priority}
    create_message = amqp.create_task_message
    send_message = amqp.send_task_message
    declared: list[bool] = []

    def publish(task_id: str, image_id: int, argsrepr: str) -> None:
        message = create_message(task_id, COLORIZE, [image_id], {}, argsrepr=argsrepr, **options)
        # None lets Celery declare the queue (a no-op once known); [] skips the check.
        declare: list[Any] | None = [] if declared else None
        send_message(
            producer, COLORIZE, message, queue=queue, declare=declare, retry=retry, **route
        )
        declared.append(True)

    return publish
