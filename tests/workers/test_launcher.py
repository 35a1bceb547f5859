"""The supervising launcher: worker arguments, restart policy, restarts and crash loops.

The workers here are stand-ins (see ``launcher_helpers.py``): small Python programs
written to ``tmp_path`` that record what happens to them in a file.
"""

from __future__ import annotations

import logging
from itertools import count
from pathlib import Path

import pytest
from launcher_helpers import Workers, wait_until

from workers.app import create_app
from workers.broker import REDELIVERY_TRANSPORT_OPTIONS
from workers.commandline import node_log_format, worker_argv
from workers.errors import EX_CONFIG
from workers.launcher import ChildOutcome, ChildSpec, RestartPolicy, Supervisor, exit_status

#: Restart quickly: the tests check what happens, not how long it takes.
FAST = RestartPolicy(initial_delay_s=0.01, max_delay_s=0.05, stable_after_s=60.0, max_failures=3)


# ------------------------------------------------------------------ arguments and policy


def test_worker_argv_runs_one_prefork_process_on_the_colorize_queue() -> None:
    argv = worker_argv("gpu1@render-07", loglevel="DEBUG")

    assert argv[0] == "worker"
    assert "--pool=prefork" in argv
    assert "--concurrency=1" in argv
    assert "--queues=colorize" in argv
    assert "--hostname=gpu1@render-07" in argv
    assert "--task-events" in argv
    assert {"--without-gossip", "--without-mingle"} <= set(argv)
    assert "--loglevel=DEBUG" in argv
    assert not any(arg.startswith("--max-memory-per-child") for arg in argv)


def test_worker_argv_passes_the_memory_limit_in_kib() -> None:
    argv = worker_argv("gpu0@h", max_memory_per_child_kib=8 * 1024 * 1024)

    assert "--max-memory-per-child=8388608" in argv


def test_worker_argv_rejects_a_memory_limit_below_one_kib() -> None:
    with pytest.raises(ValueError, match="positive"):
        worker_argv("gpu0@h", max_memory_per_child_kib=0)


def test_worker_argv_is_accepted_by_celery() -> None:
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    app = create_app(broker_url="redis://127.0.0.1:1/0")
    argv = worker_argv("gpu0@h", max_memory_per_child_kib=1)[1:]
    context = worker.make_context(
        "worker", argv, obj=CLIContext(app=app, no_color=True, workdir=None)
    )

    from celery.concurrency.prefork import TaskPool

    assert context.params["pool"] is TaskPool
    assert context.params["queues"] == ["colorize"]
    assert context.params["task_events"] is True
    assert context.params["concurrency"] == 1
    assert context.params["hostname"] == "gpu0@h"
    assert context.params["max_memory_per_child"] == 1
    app.close()


def test_node_log_format_names_the_worker_in_every_line() -> None:
    line = logging.Formatter(node_log_format("gpu3@h")).format(
        logging.LogRecord("x", logging.INFO, __file__, 1, "ready", None, None)
    )

    assert "gpu3@h" in line
    assert line.endswith("] ready")


def test_redelivery_options_make_every_restore_call_scan() -> None:
    assert REDELIVERY_TRANSPORT_OPTIONS["unacked_restore_throttle"] == 1
    assert 0 < REDELIVERY_TRANSPORT_OPTIONS["unacked_restore_interval"] <= 10


def test_redelivery_options_reach_the_redis_channel_by_default(redis_url: str) -> None:
    app = create_app(broker_url=redis_url)
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        assert channel.unacked_restore_throttle == 1
        assert (
            channel.unacked_restore_interval
            == REDELIVERY_TRANSPORT_OPTIONS["unacked_restore_interval"]
        )
    app.close()


def test_restart_delay_doubles_up_to_its_limit() -> None:
    policy = RestartPolicy(initial_delay_s=1.0, max_delay_s=5.0)

    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_exit_status_is_one_when_a_worker_was_given_up() -> None:
    fine = ChildOutcome("gpu0@h", 0, 1, False)
    broken = ChildOutcome("gpu1@h", 3, 5, True)

    assert exit_status([fine]) == 0
    assert exit_status([fine, broken]) == 1


def test_supervisor_needs_unique_worker_names(stand_ins: Workers) -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([stand_ins.spec("a", "exit:0"), stand_ins.spec("a", "exit:0")])
    with pytest.raises(ValueError, match="no worker"):
        Supervisor([])


# ------------------------------------------------------------------ restarts


def test_supervisor_restarts_a_worker_until_it_stops_cleanly(stand_ins: Workers) -> None:
    outcomes = Supervisor([stand_ins.spec("gpu0@h", "fail-then-ok:2")], policy=FAST).run()

    assert outcomes == [ChildOutcome("gpu0@h", 0, 3, False)]
    assert stand_ins.events("gpu0@h") == ["start"] * 3


def test_supervisor_releases_a_workers_tries_after_each_exit_before_restarting_it(
    stand_ins: Workers,
) -> None:
    released: list[tuple[str, list[str]]] = []

    def release(name: str) -> None:
        # What the worker had done by then: the release comes before the restart.
        released.append((name, stand_ins.events(name)))

    spec = stand_ins.spec("gpu0@h", "fail-then-ok:1")
    outcomes = Supervisor([spec], policy=FAST, release=release).run()

    assert outcomes == [ChildOutcome("gpu0@h", 0, 2, False)]
    assert released == [("gpu0@h", ["start"]), ("gpu0@h", ["start", "start"])]


def test_supervisor_kills_what_is_left_of_a_dead_workers_process_group(tmp_path: Path) -> None:
    import os
    import sys

    from workers.launcher import ChildSpec

    record = tmp_path / "pool.pid"
    # A worker whose "pool process" outlives it, as when only the main process is killed.
    program = (
        "import subprocess, sys; "
        "pool = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(record)!r}, 'w').write(str(pool.pid)); sys.exit(3)"
    )
    spec = ChildSpec("gpu0@h", (sys.executable, "-c", program), dict(os.environ))
    policy = RestartPolicy(initial_delay_s=0.01, max_failures=1)

    Supervisor([spec], policy=policy, release=lambda name: None).run()

    state = Path(f"/proc/{int(record.read_text())}/stat")

    def killed() -> bool:
        # Gone, or a zombie until its new parent reaps it.
        try:
            return state.read_text().split(")")[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(killed, "the orphaned pool process to be killed")


def test_supervisor_does_not_restart_a_worker_that_exits_with_zero(
    stand_ins: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.launcher")

    outcomes = Supervisor([stand_ins.spec("gpu0@h", "exit:0")], policy=FAST).run()

    assert outcomes == [ChildOutcome("gpu0@h", 0, 1, False)]
    assert "worker gpu0@h stopped on its own" in caplog.text


def test_supervisor_gives_up_on_a_crash_loop_and_says_so(
    stand_ins: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.launcher")

    outcomes = Supervisor([stand_ins.spec("gpu1@h", "exit:3")], policy=FAST).run()

    assert outcomes == [ChildOutcome("gpu1@h", 3, FAST.max_failures, True)]
    assert stand_ins.events("gpu1@h") == ["start"] * FAST.max_failures
    assert "worker gpu1@h exited with exit code 3" in caplog.text
    assert "worker gpu1@h failed 3 times in a row" in caplog.text
    assert "giving up on it" in caplog.text
    assert exit_status(outcomes) == 1


def test_supervisor_keeps_other_workers_running_when_it_gives_one_up(
    stand_ins: Workers,
) -> None:
    broken = stand_ins.spec("gpu0@h", "exit:3")
    healthy = stand_ins.spec("gpu1@h", f"until:{stand_ins.record('gpu0@h')}:{FAST.max_failures}")

    outcomes = Supervisor([broken, healthy], policy=FAST).run()

    assert outcomes == [
        ChildOutcome("gpu0@h", 3, FAST.max_failures, True),
        ChildOutcome("gpu1@h", 0, 1, False),
    ]


def test_failures_after_a_stable_run_are_not_a_crash_loop(stand_ins: Workers) -> None:
    ticks = count(step=1_000.0)  # every run looks long enough to be stable
    policy = RestartPolicy(
        initial_delay_s=0.01, max_delay_s=0.01, stable_after_s=100.0, max_failures=2
    )

    outcomes = Supervisor(
        [stand_ins.spec("gpu0@h", "fail-then-ok:4")], policy=policy, clock=lambda: next(ticks)
    ).run()

    assert outcomes == [ChildOutcome("gpu0@h", 0, 5, False)]


def test_a_program_that_cannot_start_counts_as_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = ChildSpec("gpu0@h", (str(tmp_path / "no-such-program"),), {})

    outcomes = Supervisor([missing], policy=FAST).run()

    assert outcomes == [ChildOutcome("gpu0@h", None, 0, True)]
    assert "cannot start worker gpu0@h" in caplog.text


# ------------------------------------------------------------------ workers that cannot work


def test_a_worker_that_cannot_work_is_not_restarted_and_the_launcher_says_so(
    stand_ins: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.launcher")
    broken = stand_ins.spec("gpu0@h", f"exit:{EX_CONFIG}")
    healthy = stand_ins.spec("gpu1@h", f"until:{stand_ins.record('gpu0@h')}:1")

    outcomes = Supervisor([broken, healthy], policy=FAST).run()

    assert outcomes == [
        ChildOutcome("gpu0@h", EX_CONFIG, 1, False, cannot_work=True),
        ChildOutcome("gpu1@h", 0, 1, False),
    ]
    assert stand_ins.events("gpu0@h") == ["start"]
    assert "worker gpu0@h stopped because it cannot work" in caplog.text
    assert "restarting worker gpu0@h" not in caplog.text
    assert exit_status(outcomes) == EX_CONFIG
    assert exit_status([ChildOutcome("gpu1@h", 3, 5, True), *outcomes]) == EX_CONFIG
