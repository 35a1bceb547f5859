"""How long the task of a worker that died takes to run again, with kombu's and panchro's sweep.

With ``task_acks_late`` a message stays in Redis's ``unacked`` hash while its task runs.
If the whole worker dies (``kill -9``, a node lost), nobody rejects it: the message comes
back only when some worker's Redis transport sweeps the hash for messages older than the
visibility timeout. kombu sweeps every ``unacked_restore_interval`` (10 s) but scans only
on every ``unacked_restore_throttle``-th (10th) sweep, so once the timeout has passed a
message can wait up to 100 s more. panchro's workers scan every sweep, every
``workers.broker.RESTORE_INTERVAL_S`` seconds (``REDELIVERY_TRANSPORT_OPTIONS``).

Each trial runs a real worker (``celery worker`` with the launcher's arguments, one
prefork process) whose colorize stand-in blocks on its first delivery, kills it in the
middle of the task, starts a second worker at once and measures the time until the task
starts again. Scenarios:

- ``node``: the worker's main and pool processes are killed, with kombu's sweep defaults;
- ``node-tuned``: the same with panchro's transport options;
- ``pool``: only the pool process is killed; the surviving worker rejects the message
  (``task_reject_on_worker_lost``) and it runs again at once, whatever the sweep.

The visibility timeout is shortened to ``--visibility-timeout`` seconds (10 by default;
production uses twice the task's hard time limit, an hour) so that a trial takes about
two minutes with kombu's defaults and a quarter of a minute with panchro's.

Usage::

    python benchmarks/redelivery.py                       # about two minutes
    python benchmarks/redelivery.py --repeat 3 --scenarios node-tuned,pool

``PANCHRO_BENCH_BROKER_URL`` names a Redis database that the benchmark may empty; unset,
the benchmark starts a private ``redis-server`` on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from bench_servers import private_redis, wait_for
from kombu.transport.redis import Channel

from workers.app import create_app
from workers.broker import REDELIVERY_TRANSPORT_OPTIONS
from workers.commandline import worker_argv
from workers.names import COLORIZE

#: Redis list of task starts, one JSON record per start.
STARTS_KEY = "bench:starts"
#: Seconds the first delivery of the task blocks (it is killed long before).
HOLD_S = 3_600.0
#: Seconds the task runs before it is killed.
RUN_BEFORE_KILL_S = 1.0
#: Seconds a trial waits for the task to run again before it counts as lost.
TRIAL_LIMIT_S = 300.0
#: kombu's own sweep settings, read from the installed transport.
KOMBU_DEFAULTS: Mapping[str, int] = {
    "unacked_restore_interval": int(Channel.unacked_restore_interval),
    "unacked_restore_throttle": int(Channel.unacked_restore_throttle),
}
#: Transport options of each scenario and what it kills.
SCENARIOS: dict[str, tuple[str, Mapping[str, int]]] = {
    "node": ("node", KOMBU_DEFAULTS),
    "node-tuned": ("node", REDELIVERY_TRANSPORT_OPTIONS),
    "pool": ("pool", REDELIVERY_TRANSPORT_OPTIONS),
}


@dataclass(frozen=True)
class Trial:
    """One measured redelivery.

    Attributes:
        scenario: The scenario's name.
        first_start: When the task first started (epoch seconds).
        killed: When the worker was killed.
        second_start: When the task started again.
    """

    scenario: str
    first_start: float
    killed: float
    second_start: float

    @property
    def after_kill(self) -> float:
        """Seconds from the kill to the second start."""
        return self.second_start - self.killed


# ---------------------------------------------------------------------------- worker side


def run_worker(broker_url: str, node: str, options: Mapping[str, int], timeout: int) -> None:
    """Run a Celery worker whose colorize task blocks on its first delivery (worker mode).

    Args:
        broker_url: The Redis broker.
        node: The node name.
        options: Broker transport options besides the visibility timeout.
        timeout: The visibility timeout in seconds.
    """
    app = create_app(
        broker_url=broker_url,
        soft_time_limit=timeout - 2,
        time_limit=timeout - 1,
        visibility_timeout=timeout,
        broker_transport_options=dict(options),
    )

    @app.task(name=COLORIZE, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def colorize(self: Any, image_id: int) -> None:
        client = redis.Redis.from_url(broker_url)
        delivery = int(client.incr(f"bench:deliveries:{image_id}"))
        record = {"delivery": delivery, "pid": os.getpid(), "at": time.time(), "node": node}
        client.rpush(STARTS_KEY, json.dumps(record))
        if delivery == 1:
            time.sleep(HOLD_S)

    app.worker_main(argv=worker_argv(node, loglevel="WARNING"))


# ---------------------------------------------------------------------------- driver side


def _start_worker(
    broker_url: str, node: str, scenario: str, timeout: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        node,
        "--broker",
        broker_url,
        "--scenarios",
        scenario,
        "--visibility-timeout",
        str(timeout),
    ]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _starts(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(STARTS_KEY, 0, -1)]


def run_trial(broker_url: str, scenario: str, timeout: int, logs: Path) -> Trial:
    """Kill a worker in the middle of a task and time the task's next start.

    Args:
        broker_url: A Redis database that may be emptied.
        scenario: A key of :data:`SCENARIOS`.
        timeout: The visibility timeout in seconds.
        logs: Folder for the workers' output.

    Returns:
        The measurement.
    """
    kills, _ = SCENARIOS[scenario]
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    first = _start_worker(broker_url, "a@bench", scenario, timeout, logs / f"{scenario}-a.log")
    workers = [first]
    try:
        app = create_app(
            broker_url=broker_url,
            soft_time_limit=timeout - 2,
            time_limit=timeout - 1,
            visibility_timeout=timeout,
        )
        try:
            # Sent before the worker is up, the message was once popped and lost while the
            # worker started; the ping makes sure its consumer is running.
            wait_for(
                lambda: app.control.ping(destination=["a@bench"], timeout=0.5),
                "the first worker",
                120.0,
            )
            app.send_task(COLORIZE, args=[1], argsrepr="(1, bench)")
        finally:
            app.close()
        wait_for(lambda: len(_starts(client)) >= 1, "the first start", 120.0)
        time.sleep(RUN_BEFORE_KILL_S)
        started = _starts(client)[0]
        if kills == "node":
            _kill_group(first)
            killed = time.time()
            workers.append(
                _start_worker(broker_url, "b@bench", scenario, timeout, logs / f"{scenario}-b.log")
            )
        else:
            os.kill(int(started["pid"]), signal.SIGKILL)
            killed = time.time()
        wait_for(
            lambda: len(_starts(client)) >= 2, f"the task to run again ({scenario})", TRIAL_LIMIT_S
        )
        again = _starts(client)[1]
    finally:
        for proc in workers:
            _kill_group(proc)
        client.close()
    return Trial(scenario, float(started["at"]), killed, float(again["at"]))


def _sweep(options: Mapping[str, int]) -> str:
    period = options["unacked_restore_interval"] * options["unacked_restore_throttle"]
    return f"{period} s"


def _table(trials: list[Trial], timeout: int) -> str:
    header = (
        f"{'scenario':<11} {'killed':<5} {'sweep':>6} {'visibility':>10} "
        f"{'kill->rerun s':>14} {'beyond timeout s':>17} {'trials':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, (kills, options) in SCENARIOS.items():
        mine = [trial for trial in trials if trial.scenario == name]
        if not mine:
            continue
        after = [trial.after_kill for trial in mine]
        beyond = [trial.second_start - trial.first_start - timeout for trial in mine]
        extra = f"{statistics.median(beyond):17.1f}" if kills == "node" else f"{'-':>17}"
        sweep = _sweep(options) if kills == "node" else "-"
        lines.append(
            f"{name:<11} {kills:<5} {sweep:>6} {timeout:>8} s "
            f"{statistics.median(after):14.1f} {extra} {len(mine):>6}"
        )
    lines.append(
        "medians; 'beyond timeout' counts from the first start plus the visibility timeout"
    )
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments and run the worker mode or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="trials per scenario")
    parser.add_argument("--visibility-timeout", type=int, default=10, help="seconds")
    parser.add_argument("--worker", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.visibility_timeout < 4:
        parser.error("--visibility-timeout must be at least 4 s (it exceeds the time limits)")
    if args.worker:
        run_worker(args.broker, args.worker, SCENARIOS[names[0]][1], args.visibility_timeout)
        return
    configured = os.environ.get("PANCHRO_BENCH_BROKER_URL")
    with tempfile.TemporaryDirectory(prefix="panchro-bench-redelivery-") as folder:
        logs = Path(folder)
        with private_redis() if configured is None else _given(configured) as broker_url:
            trials = []
            for name in names:
                for index in range(args.repeat):
                    trial = run_trial(broker_url, name, args.visibility_timeout, logs)
                    print(f"{name} #{index + 1}: rerun {trial.after_kill:.1f} s after the kill")
                    trials.append(trial)
    print(f"kombu {_kombu_version()}, celery {_celery_version()}, {os.cpu_count()} CPUs")
    print(_table(trials, args.visibility_timeout))


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def _kombu_version() -> str:
    import kombu

    return str(kombu.__version__)


def _celery_version() -> str:
    import celery

    return str(celery.__version__)


if __name__ == "__main__":
    main()
