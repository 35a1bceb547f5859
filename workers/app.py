"""The Celery application of panchro, configured entirely in code.

``create_app(broker_url=...)`` returns an app that the producer (``panchro submit``, the
dispatcher) and the workers build the same way. The catalog is the source of truth for
every image, so the broker only carries image ids and nothing is stored as a task result.

Delivery is "at least once": a message is acknowledged after its task has run
(``task_acks_late``) and is handed out again if the worker process dies
(``task_reject_on_worker_lost``) or its connection to Redis is lost. The colorize task
claims its image with a conditional UPDATE, so a second delivery is harmless. A worker's
app (``workers.tasks.build_worker_app``) adds :mod:`workers.redelivery`: on Redis, a
rejected message goes back to the front of its queue rather than behind every waiting one.

Redis redelivers an unacknowledged message once its visibility timeout has passed, even if
a worker is still busy with it. The timeout is therefore always longer than the hard time
limit of a task (:func:`check_limits`), and it is set in each of the places Celery and
kombu read it from. Nothing waits for it in practice: a worker requeues what a lost
connection left unacknowledged as soon as it is connected again, and the scheduler's
reaper hands back what no live worker holds. The limits come from ``panchro.settings``
(``PANCHRO_SOFT_TIME_LIMIT``, ``PANCHRO_TIME_LIMIT``, ``PANCHRO_VISIBILITY_TIMEOUT``).

Each collection's tasks carry its priority (``workers.broker.message_priority``): on
Redis they wait in one list per priority, and a worker takes the next message from the
highest list that holds one, so a collection of higher priority overtakes what is queued.

Queue names and the transport options that make redelivery prompt come from
:mod:`workers.broker`, the one module that knows kombu's Redis internals.

This module imports neither torch nor the model: the producer side must stay light.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import Celery

from workers.broker import (
    COLORIZE_QUEUE,
    PRIORITY_TRANSPORT_OPTIONS,
    REDELIVERY_TRANSPORT_OPTIONS,
    SCHEDULER_QUEUE,
)
from workers.names import COLORIZE, DISPATCH

logger = logging.getLogger(__name__)

#: Seconds after which a task is asked to stop (``SoftTimeLimitExceeded``).
SOFT_TIME_LIMIT_S = 1_500.0
#: Seconds after which the process running a task is killed.
TIME_LIMIT_S = 1_800.0
#: Visibility timeout as a multiple of the hard time limit, when none is given.
VISIBILITY_TIMEOUT_FACTOR = 2.0
#: Seconds a new worker process may take to report that it started: long enough to load
#: a checkpoint of several hundred megabytes and move it to the GPU.
PROC_ALIVE_TIMEOUT_S = 180.0
#: Serialisation format of every message; pickle is never accepted.
SERIALIZER = "json"


def check_limits(
    soft_time_limit: float, time_limit: float, visibility_timeout: int | None = None
) -> int:
    """Check that the time limits and the visibility timeout fit together.

    Args:
        soft_time_limit: Seconds after which a task gets ``SoftTimeLimitExceeded``.
        time_limit: Seconds after which the process running a task is killed.
        visibility_timeout: Seconds Redis waits for an acknowledgement; None means
            ``VISIBILITY_TIMEOUT_FACTOR`` times ``time_limit``.

    Returns:
        The visibility timeout to use.

    Raises:
        ValueError: If a limit is not positive, the soft limit is not below the hard
            one, or the visibility timeout is not longer than the hard limit.
    """
    if soft_time_limit <= 0 or time_limit <= 0:
        raise ValueError("time limits must be positive")
    if soft_time_limit >= time_limit:
        raise ValueError(
            f"soft_time_limit ({soft_time_limit}s) must be below time_limit ({time_limit}s)"
        )
    if visibility_timeout is None:
        visibility_timeout = math.ceil(time_limit * VISIBILITY_TIMEOUT_FACTOR)
    if visibility_timeout <= time_limit:
        # A shorter timeout would hand a message that is still being processed to a
        # second worker.
        raise ValueError(
            f"visibility_timeout ({visibility_timeout}s) must be longer than "
            f"time_limit ({time_limit}s)"
        )
    return visibility_timeout


def create_app(
    *,
    broker_url: str,
    soft_time_limit: float = SOFT_TIME_LIMIT_S,
    time_limit: float = TIME_LIMIT_S,
    visibility_timeout: int | None = None,
    proc_alive_timeout: float = PROC_ALIVE_TIMEOUT_S,
    main: str = "panchro",
    **options: Any,
) -> Celery:
    """Build the Celery app that sends and runs panchro's tasks.

    Args:
        broker_url: The Redis broker, e.g. ``redis://127.0.0.1:6379/0``.
        soft_time_limit: Seconds after which a task gets ``SoftTimeLimitExceeded``.
        time_limit: Seconds after which the process running a task is killed.
        visibility_timeout: Seconds Redis waits for an acknowledgement before handing a
            message to another worker; None means ``VISIBILITY_TIMEOUT_FACTOR`` times
            ``time_limit``.
        proc_alive_timeout: Seconds a new worker process may take to start up.
        main: Name of the app (the prefix of auto-generated task names).
        **options: Further Celery settings (lower-case names); they override the ones
            set here, e.g. ``task_publish_retry=False``. ``broker_transport_options`` are
            merged with the visibility timeout instead of replacing it.

    Returns:
        The configured app. It is not set as Celery's current app.

    Raises:
        ValueError: If a limit is not positive, the soft limit is not below the hard
            one, or the visibility timeout is not longer than the hard limit.
    """
    visibility_timeout = check_limits(soft_time_limit, time_limit, visibility_timeout)
    # Further transport options (connection retries and the like) are merged in; the
    # visibility timeout is always the one checked above.
    transport_options = {
        **REDELIVERY_TRANSPORT_OPTIONS,
        **PRIORITY_TRANSPORT_OPTIONS,
        **dict(options.pop("broker_transport_options", None) or {}),
        "visibility_timeout": visibility_timeout,
    }
    app = Celery(main, set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=dict(transport_options),
        # Read by the Redis result backend and, in some versions, by the broker's
        # unacked-message restore; kept equal so no copy falls back to the 1 h default.
        result_backend_transport_options=dict(transport_options),
        visibility_timeout=visibility_timeout,
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer=SERIALIZER,
        result_serializer=SERIALIZER,
        event_serializer=SERIALIZER,
        accept_content=[SERIALIZER],
        result_accept_content=[SERIALIZER],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_soft_time_limit=soft_time_limit,
        task_time_limit=time_limit,
        worker_proc_alive_timeout=proc_alive_timeout,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # A worker started without -Q consumes only the colorize queue: the dispatch
        # task is registered in ``panchro scheduler`` alone, and any other worker would
        # discard it as unregistered.
        task_default_queue=COLORIZE_QUEUE,
        task_create_missing_queues=True,
        task_routes={
            COLORIZE: {"queue": COLORIZE_QUEUE},
            DISPATCH: {"queue": SCHEDULER_QUEUE},
        },
        enable_utc=True,
        timezone="UTC",
    )
    if options:
        app.conf.update(**options)
    logger.debug(
        "celery app %s: time limits %ss/%ss, visibility timeout %ss",
        main,
        soft_time_limit,
        time_limit,
        visibility_timeout,
    )
    return app
