"""The command line and log format of one device's Celery worker, as the launcher starts it.

``panchro workers`` starts each worker as ``panchro worker-child``, which runs
``app.worker_main(worker_argv(node))`` with only its device visible; the logs of all the
workers of a host interleave, so every line names its node (:func:`node_log_format`).
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.broker import COLORIZE_QUEUE

__all__ = ["node_log_format", "worker_argv"]


def worker_argv(
    node: str,
    *,
    loglevel: str = "INFO",
    max_memory_per_child_kib: int | None = None,
    queues: Sequence[str] = (COLORIZE_QUEUE,),
) -> list[str]:
    """Return the Celery worker arguments of one device's worker.

    One prefork pool process runs the tasks: prefork keeps hard time limits and
    ``max_memory_per_child`` working, and a single process owns the device. Task events
    are on for Flower. Gossip and mingle are off: the workers need nothing from each
    other (mingle only shares revoked task ids at start-up, about a second per start, and
    panchro never revokes), and with dozens of them every worker would otherwise receive
    every other worker's events.

    Args:
        node: The node name, e.g. ``gpu0@render-07``.
        loglevel: Celery's log level name.
        max_memory_per_child_kib: Resident memory, in KiB, after which the pool process
            is replaced once its current task has finished; None for no limit.
        queues: Queues to consume.

    Returns:
        Arguments for ``app.worker_main()`` (or after ``celery -A <module>``).

    Raises:
        ValueError: If the memory limit is not positive.
    """
    argv = [
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        f"--queues={','.join(queues)}",
        f"--hostname={node}",
        "--task-events",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={loglevel}",
    ]
    if max_memory_per_child_kib is not None:
        if max_memory_per_child_kib < 1:
            raise ValueError(
                f"max_memory_per_child_kib must be positive, not {max_memory_per_child_kib}"
            )
        argv.append(f"--max-memory-per-child={max_memory_per_child_kib}")
    return argv


def node_log_format(node: str, *, task: bool = False) -> str:
    """Return a Celery log format that names the worker, so interleaved logs stay readable.

    Args:
        node: The worker's node name.
        task: The format of lines logged inside a task (with its name and id).

    Returns:
        A ``logging`` format string for ``worker_log_format`` or ``worker_task_log_format``.
    """
    head = f"[%(asctime)s: %(levelname)s/%(processName)s {node}]"
    if task:
        return f"{head} %(task_name)s[%(task_id)s]: %(message)s"
    return f"{head} %(message)s"
