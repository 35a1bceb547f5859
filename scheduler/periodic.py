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

Before each pass, what no live worker holds is handed back (:mod:`scheduler.reaping`):
delivered messages of workers that are gone go back to the front of the queue, and
``running`` images whose task no live worker holds go back to ``pending``, seconds after
the fact instead of after the broker's visibility timeout. Then images left ``queued``
without a message are given back: a dispatcher that died between its commit and its
send, or a broker that lost its messages, leaves them counted against ``max_in_flight``
for ever. Every image queued longer than a grace period whose id is in no colorize
message of the broker (none waiting, none delivered and unacknowledged) has lost its
message and goes back to ``pending``, to be sent again by the pass. Getting this wrong
costs nothing worse than a second message, which finds the image already claimed and
does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catalog import DatabaseUnavailable, make_sessionmaker, transaction, unqueue_stale
from scheduler.dispatching import dispatch
from scheduler.errors import BrokerUnavailable
from scheduler.reaping import INSPECT_TIMEOUT_S, REAP_AFTER_S, read_broker, reap
from scheduler.sending import celery_sender
from workers.broker import SCHEDULER_QUEUE
from workers.names import DISPATCH

logger = logging.getLogger(__name__)

#: Seconds between two dispatch passes.
DISPATCH_INTERVAL_S = 10.0
#: Seconds an image must have been queued, with no colorize message in the broker, before
#: it counts as having lost its message: far more than a dispatch pass's commit-to-send.
ORPHAN_AFTER_S = 300.0
#: Name of the beat schedule entry.
BEAT_ENTRY = "panchro-dispatch"
#: Beat keeps its schedule in memory: an interval needs no state across restarts, and no
#: schedule file is left in the working directory.
BEAT_SCHEDULER = "celery.beat:Scheduler"


def colorize_messages(app: Any) -> int | None:
    """Count the colorize messages the broker holds, waiting or delivered and unacknowledged.

    On Redis, kombu keeps a delivered message in its ``unacked`` hash until the worker
    acknowledges it (late, after the task), or until it is restored to the queue.

    Args:
        app: The Celery app.

    Returns:
        The count, or None when the broker cannot tell (not Redis, or unreachable).
    """
    snapshot = read_broker(app)
    return None if snapshot is None else snapshot.waiting + len(snapshot.delivered)


def give_back_orphans(
    app: Any, sessions: sessionmaker[Session], *, orphan_after: float = ORPHAN_AFTER_S
) -> int:
    """Return queued images whose message is lost to ``pending`` (see the module's text).

    Args:
        app: The Celery app.
        sessions: The catalog.
        orphan_after: Seconds an image must have been queued.

    Returns:
        How many images went back to pending.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    snapshot = read_broker(app)
    if snapshot is None:
        return 0
    before = datetime.now(UTC) - timedelta(seconds=orphan_after)
    with transaction(sessions) as db:
        return unqueue_stale(db, queued_before=before, keep=snapshot.image_ids)


def hand_back_lost(
    app: Any,
    sessions: sessionmaker[Session],
    *,
    reap_after: float = REAP_AFTER_S,
    orphan_after: float = ORPHAN_AFTER_S,
    inspect_timeout: float = INSPECT_TIMEOUT_S,
    suspects: set[str] | None = None,
) -> None:
    """Before a dispatch pass: the reaper, then the queued orphans (see the module's text).

    Args:
        app: The Celery app.
        sessions: The catalog.
        reap_after: Seconds a delivery or a try must be old before the reaper may hand
            it back.
        orphan_after: Seconds a queued image with no message must have been queued.
        inspect_timeout: Seconds to wait for the workers' answers.
        suspects: The reaper's memory between passes (``scheduler.reaping.reap``).

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    try:
        reap(app, sessions, grace=reap_after, timeout=inspect_timeout, suspects=suspects)
    except DatabaseUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed reap must not stop dispatching
        logger.warning("reaper pass failed, the next one retries: %s", exc)
    give_back_orphans(app, sessions, orphan_after=orphan_after)


def install_dispatcher(
    app: Any,
    *,
    database_url: str,
    max_in_flight: int,
    interval: float = DISPATCH_INTERVAL_S,
    tz: tzinfo | None = None,
    orphan_after: float = ORPHAN_AFTER_S,
    reap_after: float = REAP_AFTER_S,
    inspect_timeout: float = INSPECT_TIMEOUT_S,
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
        orphan_after: Seconds after which a queued image with no message in the broker
            is sent again.
        reap_after: Seconds after which a delivered message or a running try that no
            live worker holds is handed back (``scheduler.reaping``).
        inspect_timeout: Seconds the reaper waits for the workers' answers.

    Raises:
        ValueError: If ``max_in_flight`` or ``interval`` is not positive.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    cache: dict[str, sessionmaker[Session]] = {}
    send = celery_sender(app)
    # Kept by the process that runs the passes (one pool process, for its whole life).
    suspects: set[str] = set()

    def sessions() -> sessionmaker[Session]:
        if "sessions" not in cache:
            cache["sessions"] = make_sessionmaker(database_url)
        return cache["sessions"]

    # Not acks_late: a pass lost with its worker needs no redelivery, beat sends the next.
    @app.task(name=DISPATCH, ignore_result=True, acks_late=False, shared=False)  # type: ignore[untyped-decorator]
    def dispatch_pass() -> int:
        """Run one dispatch pass; return the number of tasks sent."""
        try:
            hand_back_lost(
                app,
                sessions(),
                reap_after=reap_after,
                orphan_after=orphan_after,
                inspect_timeout=inspect_timeout,
                suspects=suspects,
            )
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
