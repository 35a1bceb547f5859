"""Sending colorize tasks through a Celery app, a whole batch per broker round trip.

``celery_sender(app)`` returns the ``send`` callable that :func:`scheduler.dispatching.dispatch`
takes. It knows the task only by its name (``workers.names.COLORIZE``), so the producer
never imports the worker's code, torch or the model.

Each message costs Redis two commands (the task, and the ``task-sent`` event that Flower
shows). Sent one by one, that is two network round trips per image; within kombu's
publish batch (kombu 5.7 and later) all commands of a batch go to Redis in one pipeline,
which makes sending 100,000 tasks a matter of seconds rather than minutes. With an older
kombu the messages are sent one by one over one connection.

What remains is Celery's own work per message: building it, and the ``task-sent`` event,
which costs about as much again as the task (see ``docs/performance.md``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kombu.exceptions import OperationalError

from scheduler.dispatching import Send, TaskRequest
from scheduler.errors import BrokerUnavailable
from workers.names import COLORIZE

logger = logging.getLogger(__name__)

#: Broker commands buffered per message in a publish batch (the task and its event),
#: with room to spare, so that a batch is flushed once, at its end.
_COMMANDS_PER_MESSAGE = 4


def celery_sender(app: Any) -> Send:
    """Return a ``send`` callable that sends colorize tasks with a Celery app.

    Messages are built and published by Celery's own protocol code
    (``app.amqp.create_task_message`` and ``app.amqp.send_task_message``, what
    ``app.send_task`` uses), so workers, Flower and the publish signals see ordinary
    tasks; the route is looked up and the queue declared once per batch rather than once
    per message. A ``task-sent`` event goes with each message when the app's
    ``task_send_sent_event`` is on.

    Every batch reuses one pooled producer and connection. With kombu's publish batches,
    a batch reaches the broker in one pipeline at its end: if that fails, the error says
    ``sent=0`` and every image of the batch returns to pending; a message that did reach
    the broker is then harmless (a worker finds its image not queued and drops it).

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).

    Returns:
        The callable; it raises ``BrokerUnavailable`` when the broker cannot be reached.
    """

    def send(requests: Sequence[TaskRequest]) -> None:
        if not requests:
            return
        sent = 0
        try:
            with app.producer_or_acquire() as producer:
                errors = _broker_errors(producer)
                batched = hasattr(producer, "batch")
                publish = _publisher(app, producer, retry=False if batched else None)
                try:
                    if batched:
                        size = _COMMANDS_PER_MESSAGE * len(requests)
                        with producer.batch(max_size=size):
                            for request in requests:
                                publish(request)
                    else:
                        for request in requests:
                            publish(request)
                            sent += 1
                except errors as exc:
                    raise BrokerUnavailable(
                        f"cannot send tasks to the broker: {exc}", sent=sent
                    ) from exc
        except (OperationalError, OSError) as exc:
            # Raised when no connection could be made at all.
            raise BrokerUnavailable(f"cannot reach the broker: {exc}", sent=sent) from exc
        logger.debug("sent %d colorize tasks", len(requests))

    return send


def _publisher(app: Any, producer: Any, *, retry: bool | None) -> Callable[[TaskRequest], None]:
    """Return a function that publishes one colorize task on ``producer``."""
    amqp = app.amqp
    queue = amqp.router.route({}, COLORIZE)["queue"]
    events = bool(app.conf.task_send_sent_event)
    create_message = amqp.create_task_message
    send_message = amqp.send_task_message
    declared: list[bool] = []

    def publish(request: TaskRequest) -> None:
        message = create_message(
            str(uuid.uuid4()),
            COLORIZE,
            [request.image_id],
            {},
            argsrepr=request.argsrepr,
            kwargsrepr="{}",
            create_sent_event=events,
            ignore_result=True,
        )
        # None lets Celery declare the queue (a no-op once known); [] skips the check.
        declare: list[Any] | None = [] if declared else None
        send_message(producer, COLORIZE, message, queue=queue, declare=declare, retry=retry)
        declared.append(True)

    return publish


def _broker_errors(producer: Any) -> tuple[type[BaseException], ...]:
    connection = producer.connection
    found: tuple[type[BaseException], ...] = (OperationalError, OSError)
    for name in ("connection_errors", "channel_errors"):
        found += tuple(getattr(connection, name, ()))
    return found
