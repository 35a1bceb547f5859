"""The periodic top-up behind ``panchro scheduler``: Celery beat runs dispatch() every N s.

``panchro scheduler`` builds the Celery app and calls::

    run_scheduler(app, database_url=settings.database_url,
                  max_in_flight=settings.max_in_flight, interval=10.0)

which registers the ``panchro.dispatch`` task on the app, adds a beat entry that sends it
to the ``scheduler`` queue every ``interval`` seconds, and runs a Celery worker with an
embedded beat that consumes only that queue; the argv is :func:`scheduler_argv`, so the
same process can also be started as ``celery -A <module> worker --beat -Q scheduler -c 1``
from a module that calls :func:`install_dispatcher` on its app.

Each tick is one :func:`~scheduler.dispatching.dispatch` pass: it tops the broker up to
``max_in_flight`` queued images, in priority order, honouring start windows. A pass that
cannot reach the broker or the catalog logs a warning and leaves the rest to the next
tick; ticks that wait while a long pass runs expire instead of piling up. Running two
schedulers is safe (the passes take turns), just useless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catalog import DatabaseUnavailable, make_sessionmaker
from scheduler.dispatching import dispatch
from scheduler.errors import BrokerUnavailable
from scheduler.sending import celery_sender
from workers.names import DISPATCH

logger = logging.getLogger(__name__)

#: Queue of the dispatch task; the same name as ``workers.app.SCHEDULER_QUEUE``, which
#: routes ``panchro.dispatch`` there.
SCHEDULER_QUEUE = "scheduler"
#: Seconds between two dispatch passes.
DISPATCH_INTERVAL_S = 10.0
#: Name of the beat schedule entry.
BEAT_ENTRY = "panchro-dispatch"
#: Beat keeps its schedule in memory: an interval needs no state across restarts, and no
#: schedule file is left in the working directory.
BEAT_SCHEDULER = "celery.beat:Scheduler"


def install_dispatcher(
    app: Any,
    *,
    database_url: str,
    max_in_flight: int,
    interval: float = DISPATCH_INTERVAL_S,
    tz: tzinfo | None = None,
) -> None:
    """Register the dispatch task on a Celery app and schedule it every ``interval``.

    The catalog's sessions are created lazily, in the process that runs the task (a
    forked pool process), never in the parent.

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        database_url: The catalog database.
        max_in_flight: Most images queued at once over all collections.
        interval: Seconds between two dispatch passes.
        tz: The local time zone of ``--not-before`` times; None means this machine's.

    Raises:
        ValueError: If ``max_in_flight`` or ``interval`` is not positive.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    cache: dict[str, sessionmaker[Session]] = {}
    send = celery_sender(app)

    def sessions() -> sessionmaker[Session]:
        if "sessions" not in cache:
            cache["sessions"] = make_sessionmaker(database_url)
        return cache["sessions"]

    # Not acks_late: a pass lost with its worker needs no redelivery, beat sends the next.
    @app.task(name=DISPATCH, ignore_result=True, acks_late=False, shared=False)  # type: ignore[untyped-decorator]
    def dispatch_pass() -> int:
        """Run one dispatch pass; return the number of tasks sent."""
        try:
            report = dispatch(sessions(), send, max_in_flight=max_in_flight, tz=tz)
        except (BrokerUnavailable, DatabaseUnavailable) as exc:
            logger.warning("dispatch pass failed, the next one retries: %s", exc)
            return 0
        return report.sent

    app.conf.beat_scheduler = BEAT_SCHEDULER
    app.conf.beat_schedule = {
        BEAT_ENTRY: {
            "task": DISPATCH,
            "schedule": interval,
            "options": {"queue": SCHEDULER_QUEUE, "expires": interval},
        }
    }
    logger.info(
        "dispatcher installed: every %ss, at most %d tasks in flight", interval, max_in_flight
    )


def scheduler_argv(
    *, loglevel: str = "INFO", queues: Sequence[str] = (SCHEDULER_QUEUE,)
) -> list[str]:
    """Return the Celery worker argv of ``panchro scheduler``.

    Args:
        loglevel: Celery's log level name.
        queues: Queues to consume; only the scheduler queue in production.

    Returns:
        Arguments for ``app.worker_main()`` (or after ``celery -A <module>``).
    """
    return [
        "worker",
        "--beat",
        f"--queues={','.join(queues)}",
        "--pool=prefork",
        "--concurrency=1",
        "--hostname=scheduler@%h",
        f"--loglevel={loglevel}",
    ]


def run_scheduler(
    app: Any,
    *,
    database_url: str,
    max_in_flight: int,
    interval: float = DISPATCH_INTERVAL_S,
    loglevel: str = "INFO",
    tz: tzinfo | None = None,
) -> None:
    """Run the dispatcher until the process is stopped: ``panchro scheduler``.

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        database_url: The catalog database.
        max_in_flight: Most images queued at once over all collections.
        interval: Seconds between two dispatch passes.
        loglevel: Celery's log level name.
        tz: The local time zone of ``--not-before`` times; None means this machine's.

    Raises:
        ValueError: If ``max_in_flight`` or ``interval`` is not positive.
    """
    install_dispatcher(
        app, database_url=database_url, max_in_flight=max_in_flight, interval=interval, tz=tz
    )
    app.worker_main(argv=scheduler_argv(loglevel=loglevel))
