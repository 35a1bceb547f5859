"""Whether a colorize worker has its model loaded, answered over Celery's control channel.

A worker's pool process loads the checkpoint when it starts (``worker_process_init``) and
keeps it warm across tasks; while it loads, or after it was replaced (recycled after
out-of-memory, killed at the hard time limit), the worker is up but cold. The pool
process writes its pid into a :class:`Warmth` made before the fork, once its warm-up
pass is done; the worker's main process answers the ``panchro_warm`` inspect command
from it, so one broadcast tells a monitor which workers are up and which are warm::

    replies = app.control.broadcast(WARM_COMMAND, reply=True, timeout=1.0)
    # [{"gpu0@node1": {"colorize": True, "warm": True}}, {"cpu0@node2": {...}}]

Every Celery worker of panchro must know the command (:func:`install_warm_command`):
one that does not logs an error with a traceback at every broadcast. Only processes that
run the colorize task answer ``"colorize": True``; a Celery worker without it (the
dispatcher installed in a worker with beat, :func:`scheduler.install_dispatcher`) answers
``False``. ``panchro scheduler`` itself is no Celery worker and is not asked.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from typing import Any

from celery.worker.control import Panel, inspect_command

from workers.names import COLORIZE

__all__ = ["WARM_COMMAND", "Warmth", "install_warm_command", "warm_reply"]

#: Name of the inspect command a worker answers with its warmth.
WARM_COMMAND = "panchro_warm"


class Warmth:
    """The pid of the pool process whose model is loaded, shared with the worker's parent.

    Make it before the pool forks: the memory is shared, so the parent reads what the pool
    process wrote.
    """

    def __init__(self) -> None:
        self._pid = multiprocessing.RawValue(ctypes.c_long, 0)

    def mark_warm(self) -> None:
        """Record that this process has loaded the model and run its warm-up pass."""
        self._pid.value = os.getpid()

    def mark_cold(self) -> None:
        """Record that this process is stopping (its model goes with it)."""
        if self._pid.value == os.getpid():
            self._pid.value = 0

    @property
    def pid(self) -> int | None:
        """The warm pool process's pid, or None if none has loaded the model."""
        return int(self._pid.value) or None


def warm_reply(warmth: Warmth | None, pool_pids: list[int] | None) -> dict[str, bool]:
    """Return a worker's answer to ``panchro_warm``.

    Args:
        warmth: The worker's warmth; None where the worker runs no colorize task.
        pool_pids: The pids of the worker's pool processes now; None if unknown.

    Returns:
        ``{"colorize": ..., "warm": ...}``: warm only while the process that loaded the
        model is still one of the pool's (a replaced process's pid is stale).
    """
    if warmth is None:
        return {"colorize": False, "warm": False}
    pid = warmth.pid
    alive = pid is not None and (pool_pids is None or pid in pool_pids)
    return {"colorize": True, "warm": alive}


def install_warm_command() -> None:
    """Teach this process's Celery workers to answer ``panchro_warm`` (idempotent).

    Celery's remote-control commands are global to the process, like its own built-in
    ones; call this before the worker starts.
    """
    if WARM_COMMAND not in Panel.data:
        inspect_command(name=WARM_COMMAND)(_panchro_warm)


def _panchro_warm(state: Any, **_: Any) -> dict[str, bool]:
    """Whether this worker runs colorize tasks and has its model loaded."""
    consumer = state.consumer
    task = consumer.app.tasks.get(COLORIZE)
    warmth = getattr(getattr(task, "process_hooks", None), "warmth", None)
    try:
        pids = [int(pid) for pid in consumer.pool.info.get("processes", [])]
    except (AttributeError, TypeError, ValueError):
        pids = None
    return warm_reply(warmth, pids)
