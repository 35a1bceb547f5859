"""``panchro workers``: the children it plans, and a real CPU worker it runs and stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from launcher_helpers import WAIT_S
from launcher_helpers import wait_until as _wait

from migrations import upgrade
from panchro.settings import Settings
from workers.app import create_app

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


def test_worker_size_and_retry_backoff_settings_reach_the_worker_config() -> None:
    from panchro.commands.workers import worker_config

    default = worker_config(_settings(), node="cpu0@h", untrained=True)
    tuned = worker_config(
        _settings(worker_size=256, retry_backoff=2, retry_backoff_max=8),
        node="cpu0@h",
        untrained=True,
    )

    assert (default.size, default.retry_backoff, default.retry_backoff_max) == (None, None, None)
    assert (tuned.size, tuned.retry_backoff, tuned.retry_backoff_max) == (256, 2, 8)
    with pytest.raises(ValueError, match="multiple of 32"):
        _settings(worker_size=300)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        _settings(retry_backoff=0)


def test_batch_size_reaches_each_worker_and_defaults_by_device() -> None:
    from panchro.commands.workers import plan_children, worker_config
    from workers.devices import Backend, WorkerSlot
    from workers.runtime import DEFAULT_CPU_BATCH, DEFAULT_GPU_BATCH

    (child,) = plan_children(
        _settings(batch_size=3), [WorkerSlot(Backend.CUDA, 0, "h")], base_env={}, untrained=True
    )
    rebuilt = Settings.model_validate(
        {"device": "cuda:0", "batch_size": child.env["PANCHRO_BATCH_SIZE"]}
    )

    assert worker_config(rebuilt, node="gpu0@h", untrained=True).batch_size == 3
    gpu = worker_config(_settings(device="cuda:0"), node="gpu0@h", untrained=True)
    cpu = worker_config(_settings(device="cpu"), node="cpu0@h", untrained=True)
    assert (gpu.batch_size, gpu.batch_bound()) == (None, DEFAULT_GPU_BATCH)
    assert (cpu.batch_size, cpu.batch_bound()) == (None, DEFAULT_CPU_BATCH)
    with pytest.raises(ValueError, match="less than or equal to 64"):
        _settings(batch_size=65)


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
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    upgrade(catalog)  # the start-up checks refuse a catalog without the schema
    env = {
        **os.environ,
        "PANCHRO_BROKER_URL": redis_url,
        "PANCHRO_DATABASE_URL": catalog,
        # The warm shutdown waits for the warm-up pass: the smallest size makes it short.
        "PANCHRO_WORKER_SIZE": "256",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "panchro.cli",
                "workers",
                "--log-format",
                "json",
                "--loglevel",
                "info",
                "--cpu",
                "1",
                "--untrained",
                "--time-limit",
                "120",
                "--soft-time-limit",
                "100",
                "--visibility-timeout",
                "300",
            ],
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
    # The command line's limits reached the worker's Celery configuration.
    assert stats["broker"]["transport_options"]["visibility_timeout"] == 300
    assert [queue["name"] for queue in queues] == ["colorize"]
    assert f"started worker {node}" in output
    assert f"worker {node} exited with exit code 0" in output
    # Every line is one JSON object: the launcher's, the worker's (Celery's own handlers,
    # banner left out) and its pool process's, which Celery set up again after the fork.
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]
    pool_lines = [e for e in entries if e["process"].startswith("ForkPoolWorker")]
    assert any("loads the model" in entry["message"] for entry in pool_lines), output
    assert all(entry["worker"] == node for entry in pool_lines)


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--soft-time-limit", "10", "--time-limit", "5"], {}, "must be below time_limit"),
        ([], {"PANCHRO_VISIBILITY_TIMEOUT": "600"}, "must be longer than time_limit (1800"),
        (["--time-limit", "0"], {}, "0 is not in the range"),
    ],
)
def test_panchro_workers_refuses_time_limits_that_do_not_fit_in_one_line(
    args: list[str], env: dict[str, str], words: str
) -> None:
    from click.testing import CliRunner

    from panchro.cli import cli

    result = CliRunner().invoke(cli, ["workers", "--cpu", "1", "--untrained", *args], env=env)

    assert result.exit_code == (2 if "range" in words else 1), result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert words in line and "Traceback" not in result.output


def test_workers_share_the_model_options_of_run_and_colorize() -> None:
    # One definition each, so --help cannot say different things about the same setting.
    from panchro.cli import cli

    def option(command: str, name: str) -> tuple[str, object, str | None]:
        found = cli.get_command(click.Context(cli), command)
        assert found is not None
        params = {param.name: param for param in found.params}
        param = params[name]
        assert isinstance(param, click.Option)
        return type(param.type).__name__, getattr(param.type, "choices", None), param.help

    for name in ("weights", "precision", "untrained"):
        assert option("workers", name) == option("run", name) == option("colorize", name)
    assert "bf16" in (option("workers", "precision")[2] or "")
