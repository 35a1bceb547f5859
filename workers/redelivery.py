"""Handing unacknowledged messages back at once, to the front of the queue.

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked``
hash (and its time in ``unacked_index``) until the worker acknowledges it. A message
comes back to the queue in three ways, and this module fixes two of them:

- **Connection loss.** When the connection to Redis breaks, Celery closes it, and kombu
  tries to put the connection's unacknowledged messages back through it, which fails
  while Redis is down; Celery then stops the running task
  (``worker_cancel_long_running_tasks_on_connection_loss``) because it can no longer
  acknowledge it. The message stays in the hash until a worker sweeps for messages past
  their visibility timeout: an hour by default. :class:`RestoreAfterReconnect`, a step of
  the worker's consumer, keeps the channel it consumed through and, once the consumer
  has connected again, requeues that channel's unacknowledged deliveries through the new
  connection: the image runs again seconds after Redis is back.
- **Rejection.** A message rejected with ``requeue=True`` (a worker process lost under
  ``task_reject_on_worker_lost``, a worker that cannot work) went back with ``LPUSH``,
  behind every waiting message. :class:`Transport` (a worker's transport, set by
  :func:`install_redelivery`) puts it back where the next ``BRPOP`` takes it, as kombu's
  own restore does.
- The visibility-timeout sweep (``restore_visible``) already restores to the front.

Which end is the front, and the ``unacked`` hash itself, are :mod:`workers.broker`'s
(:func:`~workers.broker.restore_in_front`, :func:`~workers.broker.unacked_tags`). The
transport subclasses stay here: importing kombu's Redis transport takes about 150 ms, and
only a worker needs them.

A message requeued this way keeps its task id, so its image, still ``running`` under
that id in the catalog, is taken over by whichever worker receives it
(``catalog.claim_image``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from kombu.transport import redis as kombu_redis

from workers.broker import restore_in_front, unacked_tags

__all__ = ["TRANSPORT", "RestoreAfterReconnect", "Transport", "install_redelivery"]

logger = logging.getLogger(__name__)

#: Broker URL schemes that :class:`Transport` serves.
REDIS_SCHEMES = ("redis", "rediss")
#: Import path of :class:`Transport`, for Celery's ``broker_transport`` setting.
TRANSPORT = "workers.redelivery:Transport"


class FrontQoS(kombu_redis.QoS):
    """kombu's Redis acknowledgement emulation, with rejected messages requeued in front."""

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject a message: requeue it next in line, or drop it.

        Args:
            delivery_tag: The delivery.
            requeue: Put it back (in front) instead of dropping it.
        """
        if not requeue:
            super().reject(delivery_tag, requeue=False)  # type: ignore[no-untyped-call]
            return
        restore_in_front(self, delivery_tag)
        # The transactional state of the virtual transport, as kombu's reject does.
        super(kombu_redis.QoS, self).ack(delivery_tag)  # type: ignore[no-untyped-call]


class FrontChannel(kombu_redis.Channel):
    """kombu's Redis channel with :class:`FrontQoS`."""

    QoS = FrontQoS


class Transport(kombu_redis.Transport):
    """kombu's Redis transport whose rejected messages go back to the front of the queue."""

    Channel = FrontChannel


class RestoreAfterReconnect(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: requeue the lost connection's deliveries through the new one.

    It starts after the task consumer (each time the consumer starts, the first time and
    after every reconnect) and remembers the consumer's channel. On a restart it takes the
    deliveries that the previous channel had not acknowledged (kombu keeps them when
    its own restore failed) and puts each back in front of its queue through the new
    connection. A delivery that was acknowledged or restored meanwhile is no longer in
    the ``unacked`` hash, and restoring it does nothing.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._channel: Any = None

    def start(self, parent: Any) -> None:
        """Requeue what the previous connection left unacknowledged; remember this one.

        Args:
            parent: The worker's consumer.
        """
        previous = self._channel
        consumer = getattr(parent, "task_consumer", None)
        self._channel = None if consumer is None else consumer.channel
        if previous is None or self._channel is None or previous is self._channel:
            return
        tags = unacked_tags(previous)
        if not tags:
            return
        qos = self._channel.qos
        if not hasattr(qos, "restore_by_tag"):
            return
        logger.warning(
            "worker %s: connection to the broker is back; requeueing %d message(s) the lost "
            "connection had not acknowledged",
            getattr(parent, "hostname", "?"),
            len(tags),
        )
        for tag in tags:
            try:
                restore_in_front(qos, tag)
            except Exception as exc:  # noqa: BLE001 - the visibility timeout still restores it
                logger.error("cannot requeue message %s: %s", tag, exc)
        previous.qos._delivered.clear()

    def stop(self, parent: Any) -> None:
        """Nothing to stop; the channel is kept for the next start."""

    def shutdown(self, parent: Any) -> None:
        """Forget the channel."""
        self._channel = None


def install_redelivery(app: Celery) -> None:
    """Make a worker's app requeue in front: :class:`Transport` and :class:`RestoreAfterReconnect`.

    Only workers need this (they reject and reconnect); producers, the scheduler and
    Flower keep kombu's own transport, whose name Flower needs to recognise the broker.

    Args:
        app: The worker's app, its broker URL already set.
    """
    scheme = str(app.conf.broker_url or "").split("://", 1)[0]
    if scheme in REDIS_SCHEMES:
        app.conf.broker_transport = TRANSPORT
    app.steps["consumer"].add(RestoreAfterReconnect)
