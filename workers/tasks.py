"""The colorize task: a thin Celery task over ``workers.batches.process_batch()``.

``register_tasks(app, runtime)`` registers ``panchro.colorize(image_id)`` on a worker's app.
The task unpacks its request, hands everything to ``process_batch()`` and handles what only
a queue can: retries, and the life of its pool process.

- Batches: a worker with a batch size N above 1 (``WorkerConfig.batch_size``; by default
  4 on a GPU, 1 on the CPU) claims, besides the image of the message, up to N - 1 more
  queued images of its collection (those read ahead first) under the message's task id,
  and colorizes them in one forward. Their own messages find them running under another
  task id, or done, and do nothing. If the pool process dies, the message comes again and
  takes the whole batch over (``catalog.claim_more``); the reaper hands back what no live
  worker holds. A message on its last retry works on its own image alone.

- Retries: the failures in ``RETRYABLE`` (database, store or broker unreachable) are
  retried with exponential backoff and jitter, up to ``MAX_RETRIES`` times; the last try
  records the image as failed ("gave up after N retries: ...") instead of retrying.
- Failed images: the catalog holds the reason; the task then raises ``ImageFailed`` (an
  expected error, logged without a traceback) so that Flower shows the task as failed.
- A worker that cannot work (``WORKER_FAULTS``: unloadable or other weights than the
  collection's, a catalog never migrated, storage credentials missing or refused) fails
  no image: the image is handed back, the message goes back to the broker and the worker
  shuts down warmly, with one CRITICAL line saying why. The worker's main process then
  exits with ``EX_CONFIG`` (:attr:`PoolProcess.stop_reason` says why), which its
  supervisor does not restart. A model that cannot be loaded when the pool process starts
  stops the worker at once, before it takes a message.
- Time limits: they are the task's, a batch's as one image's (``workers.time_limits``
  says why they are not scaled). Past the soft limit the task is interrupted and
  ``process_batch()`` fails the image at work with "time limit: ..." (the rest of its
  batch goes back to pending); past the hard limit billiard kills the pool process, and
  the worker's main process, told by Celery's ``task_failure`` signal, records the images
  at work as failed ("time limit: ...") and hands the rest back, before the message is
  acknowledged, so it is not delivered again and the collection goes on.
- Recycling: device memory is not always fully returned after out-of-memory errors.
  After ``recycle_after_oom`` ladder steps, the pool process exits with billiard's
  "recycle" status once it is idle, after its last result reached the pool's parent (and
  so after the message was acknowledged); prefork starts a fresh process, which loads the
  model again. Celery's ``worker_max_tasks_per_child`` counts tasks, not events, so it
  cannot express this. If a new task reaches the process first, the process exits before
  touching it; the parent reports the task's process as lost and the broker redelivers
  the message (``task_reject_on_worker_lost``), still unclaimed.

The model, sessions and stores are built once per pool process, in
``worker_process_init`` (so the first task does not wait for the checkpoint), never in
the parent before the fork.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from billiard.pool import EX_RECYCLE
from celery import Celery, Task
from celery.exceptions import Reject, TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_process_shutdown

from catalog import DatabaseUnavailable
from workers.app import create_app
from workers.batches import process_batch
from workers.errors import (
    EX_CONFIG,
    RETRYABLE,
    WORKER_FAULTS,
    ImageFailed,
    WorkerSetupError,
)
from workers.names import COLORIZE
from workers.outcomes import ProcessStatus
from workers.redelivery import install_redelivery
from workers.runtime import RECYCLE_AFTER_OOM, WorkerConfig, WorkerRuntime
from workers.time_limits import AtWork, record_time_limit, time_limit_reason
from workers.warmth import Warmth, install_warm_command

__all__ = [
    "EX_CONFIG",
    "MAX_RETRIES",
    "RECYCLE_GRACE_S",
    "RETRYABLE",
    "RETRY_BACKOFF_MAX_S",
    "RETRY_BACKOFF_S",
    "PoolProcess",
    "build_worker_app",
    "record_time_limit",
    "register_tasks",
    "run_colorize",
    "time_limit_reason",
]

logger = logging.getLogger(__name__)

#: Retries of one message after a failure in ``RETRYABLE``; the last one gives up. With
#: the waits below they span up to about eight minutes (10 + 20 + 40 + 7 x 60 s; full
#: jitter makes the expected span half that): long enough to ride out a broker, database
#: or S3 restart, short enough that a lasting outage fails images with its reason.
MAX_RETRIES: Final = 10
#: Seconds before the first retry; each further retry waits twice as long (with jitter).
RETRY_BACKOFF_S: Final = 10
#: Seconds that no retry waits longer than: an image whose store or catalog came back is
#: tried again within a minute (issue target: 60 s after the fault ends), however long
#: the outage lasted.
RETRY_BACKOFF_MAX_S: Final = 60
#: Seconds an idle process waits after its last task before exiting to be recycled: time
#: for the task's result to reach the pool's parent, which then acknowledges the message.
RECYCLE_GRACE_S: Final = 1.0
#: Bytes of the reason a stopping pool process leaves for the worker's main process.
_STOP_REASON_BYTES: Final = 2048


class PoolProcess:
    """The life of one Celery pool process: recycling it after out-of-memory, stopping.

    Outside a pool process (tests, ``panchro run``) it only counts and logs.

    Args:
        node_name: The worker's name, for logs.
        recycle_after_oom: Out-of-memory ladder steps after which the process is replaced.
        exit_process: Ends the process with a status code (``os._exit``); injectable.
        stop_parent: Asks the pool's parent for a warm shutdown; default SIGTERM.
        recycle_grace: Seconds between the last task and the exit of a recycled process.
    """

    def __init__(
        self,
        *,
        node_name: str = "worker",
        recycle_after_oom: int = RECYCLE_AFTER_OOM,
        exit_process: Callable[[int], object] = os._exit,
        stop_parent: Callable[[], None] | None = None,
        recycle_grace: float = RECYCLE_GRACE_S,
    ) -> None:
        self.node_name = node_name
        self.recycle_after_oom = recycle_after_oom
        self._exit_process = exit_process
        self._stop_parent = stop_parent
        self._recycle_grace = recycle_grace
        self._lock = threading.Lock()
        # Made before the pool forks, so the main process reads what a pool process wrote.
        self._stop_reason = multiprocessing.RawArray(ctypes.c_char, _STOP_REASON_BYTES)
        #: The images the process works on, for the main process after a hard time limit.
        self.at_work = AtWork()
        self._parent_pid: int | None = None
        self._busy = False
        self.out_of_memory_steps = 0
        self.recycle_requested = False

    def started_in_pool(self, parent_pid: int | None = None) -> None:
        """Note that this is a pool process (from ``worker_process_init``).

        Args:
            parent_pid: The pool's parent; None for ``os.getppid()``.
        """
        self._parent_pid = os.getppid() if parent_pid is None else parent_pid

    @property
    def in_pool(self) -> bool:
        """Whether this process is a Celery pool process."""
        return self._parent_pid is not None

    @property
    def stop_reason(self) -> str | None:
        """Why a pool process stopped the worker (readable in the main process), or None."""
        reason = bytes(self._stop_reason.value).decode("utf-8", "replace")
        return reason or None

    def stop_worker(self, reason: str) -> None:
        """Ask the Celery worker of this pool process for a warm shutdown.

        Args:
            reason: Why, for the log and :attr:`stop_reason`.
        """
        logger.critical("worker %s cannot work and stops: %s", self.node_name, reason)
        encoded = reason.encode("utf-8")[: _STOP_REASON_BYTES - 1] or b"?"
        self._stop_reason.value = encoded
        if not self.in_pool:
            return
        if self._stop_parent is not None:
            self._stop_parent()
        else:
            assert self._parent_pid is not None
            os.kill(self._parent_pid, signal.SIGTERM)

    def note_out_of_memory(self, steps: int) -> None:
        """Count out-of-memory ladder steps; ask for a recycle once there are enough.

        Args:
            steps: Input sizes of one image that ran out of memory.
        """
        if steps <= 0:
            return
        with self._lock:
            self.out_of_memory_steps += steps
            if self.out_of_memory_steps >= self.recycle_after_oom and not self.recycle_requested:
                self.recycle_requested = True
                logger.warning(
                    "worker %s: %d out-of-memory steps in process %s; it is replaced after "
                    "this task, to start again with clean device memory",
                    self.node_name,
                    self.out_of_memory_steps,
                    os.getpid(),
                )

    def before_task(self) -> None:
        """Mark the process busy, or leave at once if a recycle is due.

        Raises:
            SystemExit: If an injected ``exit_process`` returned instead of exiting.
        """
        with self._lock:
            if self.recycle_requested and self.in_pool:
                self._exit("a task arrived first; the broker redelivers it")
                raise SystemExit(EX_RECYCLE)
            self._busy = True

    def after_task(self, out_of_memory_steps: int = 0) -> None:
        """Mark the process idle, and start the idle exit if a recycle is due.

        Args:
            out_of_memory_steps: Out-of-memory ladder steps of the task that ended.
        """
        self.note_out_of_memory(out_of_memory_steps)
        with self._lock:
            self._busy = False
            if not (self.recycle_requested and self.in_pool):
                return
        threading.Thread(target=self._exit_when_idle, name="recycle", daemon=True).start()

    def _exit_when_idle(self) -> None:
        time.sleep(self._recycle_grace)
        with self._lock:
            if not self._busy:
                self._exit("idle")

    def _exit(self, when: str) -> None:
        logger.warning(
            "worker %s: process %s exits to be replaced (%s)", self.node_name, os.getpid(), when
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit_process(EX_RECYCLE)


def run_colorize(task: Task, image_id: int, *, runtime: WorkerRuntime, pool: PoolProcess) -> None:
    """The body of ``panchro.colorize``: one image (or a batch), with the cached parts.

    Args:
        task: The bound task (its request gives the message id and the retry count).
        image_id: The catalog image.
        runtime: The process's cache.
        pool: The process's life.

    Raises:
        ImageFailed: If the image of the message was recorded as failed (the other images
            of its batch are in the catalog and the log).
        Reject: If the worker cannot work (``WORKER_FAULTS``); the message is requeued
            and the worker stops.
        DatabaseUnavailable: If the catalog cannot be reached (retried).
        StorageUnavailable: If a store cannot be reached (retried).
    """
    request = task.request
    retries = int(request.retries or 0)
    pool.before_task()
    steps = 0
    try:
        try:
            colorizer = runtime.colorizer()
            outcomes = process_batch(
                [image_id],
                sessions=runtime.sessions(),
                storage_for=runtime.storage_for,
                colorizer=colorizer,
                worker=request.hostname or runtime.config.node_name,
                more=runtime.batch_size() - 1,
                task_id=request.id,
                device=runtime.device_label(),
                untrained=runtime.config.untrained,
                read_ahead=runtime.read_ahead(),
                retries=retries,
                give_up=task.max_retries is not None and retries >= task.max_retries,
                at_work=pool.at_work.set,
            )
        except WORKER_FAULTS as exc:
            pool.stop_worker(str(exc))
            raise Reject(str(exc), requeue=True) from exc
        steps = sum(outcome.out_of_memory_steps for outcome in outcomes)
    finally:
        pool.at_work.set(())
        pool.after_task(steps)
    outcome = outcomes[0]
    if outcome.status is ProcessStatus.FAILED:
        raise ImageFailed(outcome.reason or "failed")


def register_tasks(app: Celery, runtime: WorkerRuntime, *, pool: PoolProcess | None = None) -> Task:
    """Register ``panchro.colorize`` on a worker's app, with the process hooks it needs.

    Args:
        app: The worker's app (``workers.app.create_app``).
        runtime: The per-process cache the task uses; nothing is built until a pool
            process starts or the first task runs.
        pool: The process-life policy; None builds one from ``runtime.config``.

    Returns:
        The task; call ``task.run(image_id)`` to run it as a plain function.
    """
    config = runtime.config
    life = pool or PoolProcess(
        node_name=config.node_name, recycle_after_oom=config.recycle_after_oom
    )

    @app.task(  # type: ignore[untyped-decorator]
        name=COLORIZE,
        bind=True,
        shared=False,
        autoretry_for=RETRYABLE,
        retry_backoff=config.retry_backoff or RETRY_BACKOFF_S,
        retry_backoff_max=config.retry_backoff_max or RETRY_BACKOFF_MAX_S,
        retry_jitter=True,
        max_retries=MAX_RETRIES,
        throws=(ImageFailed,),
    )
    def colorize(self: Task, image_id: int) -> None:
        """Colorize one catalog image (and its batch); all the work is in process_batch()."""
        run_colorize(self, image_id, runtime=runtime, pool=life)

    # ``app.task`` returned a lazy proxy of it; the registry holds the task itself.
    task: Task = app.tasks[COLORIZE]
    # Held by the task, so the receivers (weak references) live exactly as long as it does.
    task.process_hooks = _ProcessHooks(runtime, life, task)
    return task


class _ProcessHooks:
    """Builds the runtime when a pool process starts and releases it when it stops.

    In the worker's parent it also records images whose pool process was killed at the
    hard time limit: Celery reports that there, as a task failure.
    """

    def __init__(self, runtime: WorkerRuntime, pool: PoolProcess, task: Task) -> None:
        self.runtime = runtime
        self.pool = pool
        # Made here, before the pool forks: the worker answers ``panchro_warm`` from it.
        self.warmth = Warmth()
        install_warm_command()
        worker_process_init.connect(self.on_process_init)
        worker_process_shutdown.connect(self.on_process_shutdown)
        task_failure.connect(self.on_task_failure, sender=task)

    def on_task_failure(
        self, task_id: str | None = None, exception: BaseException | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(exception, TimeLimitExceeded) or task_id is None:
            return
        args = kwargs.get("args") or ()
        if not args:
            return
        image_id = int(args[0])
        limit = float(exception.args[0]) if exception.args else float("nan")
        try:
            record_time_limit(
                self.runtime.sessions(),
                image_id,
                task_id,
                limit,
                at_work=self.pool.at_work.ids(),
                batch=self.runtime.config.batch_bound(),
            )
        except (DatabaseUnavailable, WorkerSetupError) as exc:
            # The scheduler's reaper hands the image back later.
            logger.error("image %s: cannot record its time limit: %s", image_id, exc)

    def on_process_init(self, **_: Any) -> None:
        self.pool.started_in_pool()
        name = self.runtime.config.node_name
        logger.info("worker %s: pool process %s loads the model", name, os.getpid())
        try:
            self.runtime.warm_up()
        except WorkerSetupError as exc:
            # Stop before taking a message; one that arrives meanwhile meets the same
            # error and goes back to the broker.
            self.pool.stop_worker(str(exc))
        else:
            self.warmth.mark_warm()

    def on_process_shutdown(self, **_: Any) -> None:
        self.warmth.mark_cold()
        self.runtime.close()


def build_worker_app(
    config: WorkerConfig,
    *,
    broker_url: str,
    runtime: WorkerRuntime | None = None,
    pool: PoolProcess | None = None,
    **options: Any,
) -> Celery:
    """Build a colorize worker's app: the project's app with the task registered.

    Besides the task, the worker requeues what a lost broker connection left
    unacknowledged as soon as it has connected again (``workers.redelivery``), and
    records an image whose process was killed at the hard time limit as failed.

    Args:
        config: The worker's configuration (plain values; nothing is loaded here).
        broker_url: The Redis broker.
        runtime: The per-process cache; None builds one from ``config``.
        pool: The process-life policy, whose :attr:`PoolProcess.stop_reason` tells after
            ``worker_main`` whether the worker stopped because it cannot work; None
            builds one from ``config``.
        **options: Further ``create_app()`` settings.

    Returns:
        The app; start it with ``app.worker_main([...])``.
    """
    app = create_app(broker_url=broker_url, **options)
    install_redelivery(app)
    register_tasks(app, runtime or WorkerRuntime(config), pool=pool)
    return app
