"""Tests of ``workers.warmth``: the flag a pool process sets and its worker's answer."""

from __future__ import annotations

import multiprocessing
import os

from workers.warmth import Warmth, warm_reply


def _warm_then_exit(warmth: Warmth, stop: bool) -> None:
    warmth.mark_warm()
    if stop:
        warmth.mark_cold()


def test_a_forked_process_that_loaded_its_model_is_seen_warm_by_its_parent() -> None:
    warmth = Warmth()
    assert warmth.pid is None
    child = multiprocessing.get_context("fork").Process(
        target=_warm_then_exit, args=(warmth, False)
    )
    child.start()
    child.join(timeout=30)

    assert warmth.pid == child.pid
    assert warm_reply(warmth, [child.pid]) == {"colorize": True, "warm": True}
    # A replaced pool process (recycled, killed at the time limit) no longer counts.
    assert warm_reply(warmth, [os.getpid()]) == {"colorize": True, "warm": False}


def test_a_process_that_stops_is_cold_and_a_worker_without_the_task_is_no_colorize_worker() -> None:
    warmth = Warmth()
    child = multiprocessing.get_context("fork").Process(target=_warm_then_exit, args=(warmth, True))
    child.start()
    child.join(timeout=30)

    assert warmth.pid is None
    assert warm_reply(warmth, None) == {"colorize": True, "warm": False}
    assert warm_reply(None, [1]) == {"colorize": False, "warm": False}
