"""The periodic top-up behind ``panchro scheduler``: dispatch() every N seconds.

``panchro scheduler`` builds the Celery app and calls::

    run_scheduler(app, database_url=settings.database_url,
                  max_in_flight=settings.max_in_flight, interval=10.0)

which runs one pass (:func:`dispatcher`) every ``interval`` seconds in its own process
until SIGTERM or SIGINT. The scheduler only sends: it is no Celery worker, and the passes
are no tasks, so Flower's task list shows the colorize tasks and its worker list the
colorize workers, nothing else. The same pass can also run as a Celery task with beat
inside a worker that does other work (:func:`install_dispatcher`, :func:`scheduler_argv`).

Each pass is one :func:`~scheduler.dispatching.dispatch`: it tops the broker up to
``max_in_flight`` queued images, in priority order, honouring start windows. A pass that
cannot reach the broker or the catalog logs a warning and leaves the rest to the next
one; a pass that takes longer than the interval delays the next instead of piling up.
Running two schedulers is safe (the passes take turns), just useless.

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
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from types import FrameType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catalog import DatabaseUnavailable, make_sessionmaker, transaction, unqueue_stale
from scheduler.dispatching import dispatch
from scheduler.errors import BrokerUnavailable
from scheduler.flight import announce_max_in_flight
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


def dispatcher(
    app: Any,
    *,
    database_url: str,
    max_in_flight: int,
    tz: tzinfo | None = None,
    orphan_after: float = ORPHAN_AFTER_S,
    reap_after: float = REAP_AFTER_S,
    inspect_timeout: float = INSPECT_TIMEOUT_S,
    interval: float = DISPATCH_INTERVAL_S,
) -> Callable[[], int]:
    """Return one dispatch pass: hand back what was lost, then top the broker up.

    The catalog's sessions are created lazily, in the process that runs the passes (for
    a Celery worker, a forked pool process), never in the parent.

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        database_url: The catalog database.
        max_in_flight: Most images queued at once over all collections.
        tz: The local time zone of ``--not-before`` times; None means this machine's.
        orphan_after: Seconds after which a queued image with no message in the broker
            is sent again.
        reap_after: Seconds after which a delivered message or a running try that no
            live worker holds is handed back (``scheduler.reaping``).
        inspect_timeout: Seconds the reaper waits for the workers' answers.
        interval: Seconds between two passes; each pass announces ``max_in_flight`` to
            submissions for a few of them (``scheduler.flight``).

    Returns:
        A callable that runs one pass and returns the number of tasks it sent; a pass
        that cannot reach the broker or the catalog logs a warning and returns 0.

    Raises:
        ValueError: If ``max_in_flight`` is not positive.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    cache: dict[str, sessionmaker[Session]] = {}
    send = celery_sender(app)
    # Kept by the process that runs the passes, for its whole life.
    suspects: set[str] = set()

    def sessions() -> sessionmaker[Session]:
        if "sessions" not in cache:
            cache["sessions"] = make_sessionmaker(database_url)
        return cache["sessions"]

    def dispatch_pass() -> int:
        """Run one dispatch pass; return the number of tasks sent."""
        announce_max_in_flight(app, max_in_flight, interval=interval)
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

    return dispatch_pass


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
    """Register the dispatch pass as a Celery task and schedule it every ``interval``.

    For running the dispatcher inside a Celery worker with beat (``celery -A <module>
    worker --beat``, argv :func:`scheduler_argv`), beside other tasks. ``panchro
    scheduler`` does not: it runs the same pass in its own loop (:func:`run_scheduler`),
    so that Flower lists neither a dispatch task every few seconds nor the scheduler as
    a worker.

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        database_url: The catalog database.
        max_in_flight: Most images queued at once over all collections.
        interval: Seconds between two dispatch passes.
        tz: The local time zone of ``--not-before`` times; None means this machine's.
        orphan_after: See :func:`dispatcher`.
        reap_after: See :func:`dispatcher`.
        inspect_timeout: See :func:`dispatcher`.

    Raises:
        ValueError: If ``max_in_flight`` or ``interval`` is not positive.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    dispatch_pass = dispatcher(
        app,
        database_url=database_url,
        max_in_flight=max_in_flight,
        tz=tz,
        orphan_after=orphan_after,
        reap_after=reap_after,
        inspect_timeout=inspect_timeout,
        interval=interval,
    )
    # Not acks_late: a pass lost with its worker needs no redelivery, beat sends the next.
    app.task(name=DISPATCH, ignore_result=True, acks_late=False, shared=False)(dispatch_pass)
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
    """Return the Celery worker argv that runs an app of :func:`install_dispatcher`.

    Args:
        loglevel: Celery's log level name.
        queues: Queues to consume; the scheduler queue, and any others of the worker.

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
    tz: tzinfo | None = None,
    stop: threading.Event | None = None,
    after_pass: Callable[[int], None] | None = None,
    **options: float,
) -> int:
    """Run a dispatch pass every ``interval`` until stopped: ``panchro scheduler``.

    The passes run in this process, one after the other: the app only sends (colorize
    tasks, which Flower shows, and the reaper's questions to the workers), so the
    scheduler is no Celery worker and no dispatch task ever reaches the broker. A pass
    starts ``interval`` seconds after the previous one started, or at once if that one
    took longer. SIGTERM or SIGINT (in the main thread) stops the loop after the running
    pass.

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        database_url: The catalog database.
        max_in_flight: Most images queued at once over all collections.
        interval: Seconds between the starts of two dispatch passes.
        tz: The local time zone of ``--not-before`` times; None means this machine's.
        stop: Set to stop the loop; None makes one that only the signals set.
        after_pass: Called after each pass with the number of tasks it sent (a health
            check's heartbeat, for example).
        **options: ``orphan_after``, ``reap_after`` or ``inspect_timeout`` of
            :func:`dispatcher`.

    Returns:
        The number of passes run.

    Raises:
        ValueError: If ``max_in_flight`` or ``interval`` is not positive.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    dispatch_pass = dispatcher(
        app,
        database_url=database_url,
        max_in_flight=max_in_flight,
        tz=tz,
        interval=interval,
        **options,
    )
    stop = threading.Event() if stop is None else stop
    restore = _stop_on_signals(stop)
    logger.info("scheduler: a pass every %ss, at most %d tasks in flight", interval, max_in_flight)
    passes = 0
    try:
        while not stop.is_set():
            began = time.monotonic()
            sent = dispatch_pass()
            passes += 1
            if after_pass is not None:
                after_pass(sent)
            stop.wait(max(0.0, interval - (time.monotonic() - began)))
    finally:
        restore()
    logger.info("scheduler stopped after %d passes", passes)
    return passes


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM and SIGINT; return what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("scheduler: %s, stopping after this pass", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
