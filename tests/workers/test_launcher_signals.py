"""The supervising launcher's signal handling, with stand-ins and a real Celery worker.

The launcher runs in its own process, as ``panchro workers`` runs, and is signalled from
outside. Its workers are stand-ins (see ``launcher_helpers.py``) that record each start
and signal, and one real Celery worker (the stand-in of ``tests/panchro/flower_helpers.py``)
for the warm shutdown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis
from launcher_helpers import WAIT_S, Workers
from launcher_helpers import wait_until as _wait

from scheduler.dispatching import TaskRequest
from scheduler.sending import celery_sender
from workers.app import create_app
from workers.broker import message_priority, queue_keys
from workers.launcher import ChildSpec

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
    assert client.llen(queue_keys("colorize")[message_priority(0)]) == 0, (
        "the message went back to the queue"
    )
    assert client.hlen("unacked") == 0, "the message was never acknowledged"
    assert f"worker {node} exited with exit code 0" in launcher.output()
    app.close()
    client.close()
