"""The supervising launcher: restarts, crash loops, signal forwarding, a real Celery worker.

The workers here are small Python programs written to ``tmp_path`` that record what
happens to them (each start, each signal) in a file, and one real Celery worker (the
stand-in of ``tests/panchro/flower_helpers.py``) for the warm shutdown. Signal tests run
the launcher in its own process, as ``panchro workers`` runs, and signal it from outside.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from types import ModuleType

import pytest
import redis

from panchro.settings import Settings
from scheduler.dispatching import TaskRequest
from scheduler.sending import celery_sender
from workers.app import REDELIVERY_TRANSPORT_OPTIONS, create_app
from workers.launcher import (
    ChildOutcome,
    ChildSpec,
    RestartPolicy,
    Supervisor,
    exit_status,
    node_log_format,
    worker_argv,
)

#: Restart quickly: the tests check what happens, not how long it takes.
FAST = RestartPolicy(initial_delay_s=0.01, max_delay_s=0.05, stable_after_s=60.0, max_failures=3)
#: Seconds a test waits for a process; a guard against hanging, not a measurement.
WAIT_S = 60.0

#: A worker stand-in: ``child.py MODE RECORD``. It appends ``start`` to RECORD, then:
#: ``exit:N`` exits with N; ``fail-then-ok:N`` exits with 3 on its first N starts and 0
#: after; ``until:PATH:N`` runs until PATH records N starts, then exits 0; ``serve`` waits
#: for a signal, records it and exits (0 for SIGTERM); ``stubborn`` records SIGTERM and
#: SIGINT but keeps running until SIGQUIT (exit 1).
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path

    mode, record = sys.argv[1], Path(sys.argv[2])

    def note(text):
        with record.open("a") as out:
            out.write(text + "\\n")

    def starts(path):
        return path.read_text().split().count("start") if path.exists() else 0

    note("start")
    kind, _, arg = mode.partition(":")
    if kind == "exit":
        sys.exit(int(arg))
    if kind == "fail-then-ok":
        sys.exit(3 if starts(record) <= int(arg) else 0)
    if kind == "until":
        path, _, wanted = arg.rpartition(":")
        deadline = time.monotonic() + 60
        while starts(Path(path)) < int(wanted) and time.monotonic() < deadline:
            time.sleep(0.02)
        sys.exit(0)

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        note(name)
        if mode == "serve":
            sys.exit(0 if name == "SIGTERM" else 1)
        if name == "SIGQUIT":
            sys.exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    note("ready")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.02)
    note("timeout")
    sys.exit(9)
    """
)

#: The launcher as its own process: ``launcher.py SPECS_JSON``; logs to stdout.
LAUNCHER = textwrap.dedent(
    """
    import json, logging, os, sys
    from workers.launcher import ChildSpec, Supervisor, exit_status

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(levelname)s %(name)s: %(message)s")
    specs = [ChildSpec(name, tuple(argv), {**os.environ, **env})
             for name, argv, env in json.loads(sys.argv[1])]
    sys.exit(exit_status(Supervisor(specs).run()))
    """
)


class Workers:
    """Writes the stand-in program and builds specs of workers that run it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.program = root / "child.py"
        self.program.write_text(CHILD)

    def record(self, name: str) -> Path:
        """The file in which worker ``name`` records what happens to it."""
        return self.root / f"{name}.record"

    def events(self, name: str) -> list[str]:
        """What worker ``name`` recorded so far."""
        path = self.record(name)
        return path.read_text().split() if path.exists() else []

    def spec(self, name: str, mode: str) -> ChildSpec:
        """A worker called ``name`` that behaves as ``mode`` says (see :data:`CHILD`)."""
        argv = (sys.executable, str(self.program), mode, str(self.record(name)))
        return ChildSpec(name, argv, dict(os.environ))


@pytest.fixture
def stand_ins(tmp_path: Path) -> Workers:
    return Workers(tmp_path)


def _wait(condition: object, what: str) -> None:
    import time

    assert callable(condition)
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------ arguments and policy


def test_worker_argv_runs_one_prefork_process_on_the_colorize_queue() -> None:
    argv = worker_argv("gpu1@render-07", loglevel="DEBUG")

    assert argv[0] == "worker"
    assert "--pool=prefork" in argv
    assert "--concurrency=1" in argv
    assert "--queues=colorize" in argv
    assert "--hostname=gpu1@render-07" in argv
    assert "--task-events" in argv
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


# ------------------------------------------------------------------ signals


class Launcher:
    """The launcher running in its own process and process group, as ``panchro workers``."""

    def __init__(self, root: Path, specs: list[ChildSpec], *, cwd: Path | None = None) -> None:
        script = root / "launcher.py"
        script.write_text(LAUNCHER)
        self.log = root / "launcher.log"
        payload = json.dumps([[spec.name, list(spec.argv), dict(spec.env)] for spec in specs])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), payload],
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the launcher did not exit:\n{self.output()}") from exc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    started: list[Launcher] = []
    yield started
    for launcher in started:
        launcher.kill()


def _start(
    launchers: list[Launcher], root: Path, specs: list[ChildSpec], *, cwd: Path | None = None
) -> Launcher:
    launcher = Launcher(root, specs, cwd=cwd)
    launchers.append(launcher)
    return launcher


def test_ctrl_c_reaches_each_worker_as_one_sigterm(
    stand_ins: Workers, launchers: list[Launcher], tmp_path: Path
) -> None:
    names = ["gpu0@h", "gpu1@h"]
    launcher = _start(launchers, tmp_path, [stand_ins.spec(name, "serve") for name in names])
    _wait(lambda: all("ready" in stand_ins.events(name) for name in names), "workers ready")

    # A terminal sends SIGINT to its whole foreground process group.
    os.killpg(launcher.proc.pid, signal.SIGINT)

    assert launcher.wait() == 0, launcher.output()
    for name in names:
        assert stand_ins.events(name) == ["start", "ready", "SIGTERM"]
        assert f"worker {name} exited with exit code 0" in launcher.output()
    assert "received SIGINT: warm shutdown of 2 worker(s)" in launcher.output()


def test_second_signal_turns_the_shutdown_cold(
    stand_ins: Workers, launchers: list[Launcher], tmp_path: Path
) -> None:
    names = ["gpu0@h", "gpu1@h"]
    launcher = _start(launchers, tmp_path, [stand_ins.spec(name, "stubborn") for name in names])
    _wait(lambda: all("ready" in stand_ins.events(name) for name in names), "workers ready")

    launcher.proc.send_signal(signal.SIGTERM)
    _wait(lambda: all("SIGTERM" in stand_ins.events(name) for name in names), "a warm stop")
    launcher.proc.send_signal(signal.SIGTERM)

    assert launcher.wait() == 0, launcher.output()
    for name in names:
        assert stand_ins.events(name) == ["start", "ready", "SIGTERM", "SIGQUIT"]
    assert "cold shutdown of 2 worker(s)" in launcher.output()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_get_sigterm_when_the_launcher_is_killed(
    stand_ins: Workers, launchers: list[Launcher], tmp_path: Path
) -> None:
    launcher = _start(launchers, tmp_path, [stand_ins.spec("gpu0@h", "serve")])
    _wait(lambda: "ready" in stand_ins.events("gpu0@h"), "the worker ready")

    launcher.kill()

    _wait(lambda: "SIGTERM" in stand_ins.events("gpu0@h"), "the orphaned worker to stop")


# ------------------------------------------------------------------ a real Celery worker


def _flower_helpers() -> ModuleType:
    """The stand-in Celery worker module shared with the Flower tests."""
    loaded = sys.modules.get("flower_helpers")
    if loaded is not None:
        return loaded
    path = Path(__file__).resolve().parents[1] / "panchro" / "flower_helpers.py"
    spec = importlib.util.spec_from_file_location("flower_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["flower_helpers"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_warm_shutdown_lets_the_running_task_finish_and_acknowledges_it(
    redis_url: str, launchers: list[Launcher], tmp_path: Path
) -> None:
    helpers = _flower_helpers()
    node = "cpu0@launcher-test"
    env = helpers.standin_environment(redis_url)
    spec = ChildSpec(node, tuple(helpers.standin_worker_command(node)), env)
    client = redis.Redis.from_url(redis_url)
    client.set(helpers.HOLD_KEY, 1)
    app = create_app(broker_url=redis_url, task_publish_retry=False)
    celery_sender(app)([TaskRequest(7, 1, "1920s", "album/p007.tif")])

    launcher = _start(launchers, tmp_path, [spec], cwd=helpers.HERE)
    _wait(lambda: helpers.redis_ids(redis_url, helpers.STARTED_KEY) == [7], "the task to start")

    launcher.proc.send_signal(signal.SIGTERM)
    _wait(lambda: "Warm shutdown" in launcher.output(), "the worker's warm shutdown")
    assert launcher.proc.poll() is None, "the worker left before its task finished"
    client.delete(helpers.HOLD_KEY)

    assert launcher.wait() == 0, launcher.output()
    assert helpers.redis_ids(redis_url, helpers.FINISHED_KEY) == [7]
    assert client.llen("colorize") == 0, "the message went back to the queue"
    assert client.hlen("unacked") == 0, "the message was never acknowledged"
    assert f"worker {node} exited with exit code 0" in launcher.output()
    app.close()
    client.close()


# ------------------------------------------------------------------ panchro workers


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_children_carry_the_settings_and_their_device_in_the_environment(
    tmp_path: Path,
) -> None:
    from panchro.commands.workers import plan_children
    from workers.devices import Backend, WorkerSlot

    weights = tmp_path / "ddcolor.pth"
    weights.write_bytes(b"checkpoint")
    settings = _settings(
        broker_url="redis://broker:6379/3",
        database_url="postgresql+psycopg://u:secret@db/catalog",
        weights=weights,
    )
    slots = [WorkerSlot(Backend.CUDA, 0, "h", 4), WorkerSlot(Backend.CUDA, 1, "h", 4)]

    children = plan_children(
        settings, slots, base_env={"PATH": "/bin", "PANCHRO_S3_REGION": "stale"}
    )

    assert [child.name for child in children] == ["gpu0@h", "gpu1@h"]
    first = children[0]
    assert first.env["PANCHRO_BROKER_URL"] == "redis://broker:6379/3"
    assert first.env["PANCHRO_DATABASE_URL"] == "postgresql+psycopg://u:secret@db/catalog"
    assert first.env["PANCHRO_WEIGHTS"] == str(weights)
    assert first.env["PANCHRO_DEVICE"] == "cuda:0"
    assert "PANCHRO_S3_REGION" not in first.env
    assert [child.env["CUDA_VISIBLE_DEVICES"] for child in children] == ["0", "1"]
    assert "--node=gpu1@h" in children[1].argv
    assert not any("secret" in arg for child in children for arg in child.argv)
    assert not any(arg.startswith("--cpu-threads") for arg in first.argv)


def test_cpu_children_get_their_thread_share_and_the_cpu_device() -> None:
    from panchro.commands.workers import plan_children
    from workers.devices import Backend, WorkerSlot

    slot = WorkerSlot(Backend.CPU, 0, "laptop", 2)

    (child,) = plan_children(
        _settings(), [slot], base_env={}, untrained=True, max_memory_per_child_kib=2048
    )

    assert child.env["PANCHRO_DEVICE"] == "cpu"
    assert child.env["OMP_NUM_THREADS"] == "2"
    assert child.argv[-3:] == ("--max-memory-per-child=2048", "--cpu-threads=2", "--untrained")


def test_children_need_a_checkpoint_unless_untrained(tmp_path: Path) -> None:
    import click

    from panchro.commands.workers import plan_children
    from workers.devices import Backend, WorkerSlot

    slot = WorkerSlot(Backend.CUDA, 0, "h")

    with pytest.raises(click.ClickException, match="PANCHRO_WEIGHTS"):
        plan_children(_settings(), [slot], base_env={})
    with pytest.raises(click.ClickException, match="does not exist"):
        plan_children(_settings(weights=tmp_path / "missing.pth"), [slot], base_env={})


def test_settings_environment_round_trips_through_settings(tmp_path: Path) -> None:
    from panchro.commands.workers import settings_environment

    settings = _settings(
        broker_url="redis://b/1", weights=tmp_path / "w.pth", max_in_flight=7, precision="fp16"
    )

    env = settings_environment(settings, {})
    rebuilt = Settings.model_validate({k[len("PANCHRO_") :].lower(): v for k, v in env.items()})

    assert rebuilt == settings


@pytest.mark.slow
def test_panchro_workers_runs_a_cpu_worker_and_stops_it_warmly(
    redis_url: str, tmp_path: Path
) -> None:
    node = f"cpu0@{socket.gethostname()}"
    log = tmp_path / "workers.log"
    env = {
        **os.environ,
        "PANCHRO_BROKER_URL": redis_url,
        "PANCHRO_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panchro.cli", "workers", "--cpu", "1", "--untrained"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = create_app(broker_url=redis_url)
    try:

        def answers() -> bool:
            assert proc.poll() is None, log.read_text()
            return bool(app.control.ping(destination=[node], timeout=0.5))

        _wait(answers, f"{node} to answer a ping")
        stats = app.control.inspect([node], timeout=5).stats()[node]
        queues = app.control.inspect([node], timeout=5).active_queues()[node]
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        app.close()

    output = log.read_text()
    assert status == 0, output
    assert stats["pool"]["max-concurrency"] == 1
    assert stats["pool"]["implementation"].endswith("prefork:TaskPool")
    assert stats["broker"]["transport_options"]["unacked_restore_throttle"] == 1
    assert [queue["name"] for queue in queues] == ["colorize"]
    assert f"started worker {node}" in output
    assert f"worker {node} exited with exit code 0" in output
