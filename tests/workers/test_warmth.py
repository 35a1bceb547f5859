"""Tests of ``workers.warmth``: the flag a pool process sets and its worker's answer."""

from __future__ import annotations

import os

from workers.warmth import Warmth, warm_reply


def _in_child(warmth: Warmth, *, stop: bool) -> int:
    """Fork a process that marks itself warm (and cold, if ``stop``) and exits at once.

    A bare fork and ``os._exit``, as a pool process ends: no finalizer of the test
    process (Celery's, kombu's) runs in the child.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            warmth.mark_warm()
            if stop:
                warmth.mark_cold()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def test_a_forked_process_that_loaded_its_model_is_seen_warm_by_its_parent() -> None:
    warmth = Warmth()
    assert warmth.pid is None

    child = _in_child(warmth, stop=False)

    assert warmth.pid == child
    assert warm_reply(warmth, [child]) == {"colorize": True, "warm": True}
    # A replaced pool process (recycled, killed at the time limit) no longer counts.
    assert warm_reply(warmth, [os.getpid()]) == {"colorize": True, "warm": False}


def test_a_stopped_process_is_cold_and_a_worker_without_the_task_is_no_colorize_worker() -> None:
    warmth = Warmth()

    _in_child(warmth, stop=True)

    assert warmth.pid is None
    assert warm_reply(warmth, None) == {"colorize": True, "warm": False}
    assert warm_reply(None, [1]) == {"colorize": False, "warm": False}
