"""A stand-in Celery worker and process helpers for the Flower and launcher tests.

Imported by the tests, and run by a real worker as ``celery -A flower_helpers worker``:
the module builds the project's app on ``FLOWER_STANDIN_BROKER_URL`` and registers,
under the real task name, a colorize task that touches no catalog or model. It records
each image id it starts and finishes in Redis (the broker's database), and while
:data:`HOLD_KEY` exists it waits before finishing, so a test can stop a worker in the
middle of a task.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

from workers.app import create_app
from workers.commandline import worker_argv
from workers.names import COLORIZE

#: Redis list of the image ids whose task started, in order.
STARTED_KEY = "standin:started"
#: Redis list of the image ids whose task finished, in order.
FINISHED_KEY = "standin:finished"
#: While this Redis key exists, a started task waits before finishing.
HOLD_KEY = "standin:hold"
#: Longest wait of a held task, in seconds: a guard against a test that never releases.
HOLD_LIMIT_S = 60.0
#: Seconds a helper waits for a process or condition before the test fails.
WAIT_S = 60.0
#: Folder of this module, put on the stand-in worker's ``PYTHONPATH``.
HERE = Path(__file__).resolve().parent
#: Root of the repository.
ROOT = HERE.parents[1]

BROKER_URL = os.environ.get("FLOWER_STANDIN_BROKER_URL", "redis://127.0.0.1:6379/15")
app = create_app(broker_url=BROKER_URL)

T = TypeVar("T")


@app.task(name=COLORIZE, shared=False)  # type: ignore[untyped-decorator]
def colorize(image_id: int) -> None:
    """Record the start, wait while the hold key exists, record the end."""
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.rpush(STARTED_KEY, image_id)
        deadline = time.monotonic() + HOLD_LIMIT_S
        while client.exists(HOLD_KEY) and time.monotonic() < deadline:
            time.sleep(0.05)
        client.rpush(FINISHED_KEY, image_id)
    finally:
        client.close()


def standin_worker_command(node: str) -> list[str]:
    """Return the command line of a stand-in worker with the launcher's arguments.

    Args:
        node: Its node name.

    Returns:
        ``python -m celery -A flower_helpers worker ...``.
    """
    return [sys.executable, "-m", "celery", "-A", "flower_helpers", *worker_argv(node)]


def standin_environment(broker_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a stand-in worker on ``broker_url``.

    Args:
        broker_url: The Redis broker.
        base: Environment to start from; None means this process's.

    Returns:
        The environment.
    """
    env = dict(os.environ if base is None else base)
    env["FLOWER_STANDIN_BROKER_URL"] = broker_url
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    return env


def start_process(
    argv: Sequence[str], log: Path, env: Mapping[str, str], *, cwd: Path = HERE
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group, its output going to ``log``.

    Args:
        argv: The command line.
        log: File that receives stdout and stderr.
        env: Its environment.
        cwd: Its working directory.

    Returns:
        The process.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """Stop a process started by :func:`start_process` and everything in its process group.

    Args:
        proc: The process.
        timeout: Seconds it gets to stop after SIGTERM before it is killed.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # pool processes and other leftovers of the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T | None], what: str, *, timeout: float = WAIT_S) -> T:
    """Poll until ``condition`` returns something truthy, and return it.

    Args:
        condition: Returns the awaited value, or None/False while it is not there yet.
        what: What is awaited, for the failure message.
        timeout: Seconds before giving up; a guard against hanging, not a measurement.

    Returns:
        The condition's first truthy value.

    Raises:
        AssertionError: If it did not come within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.2)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until a process accepts TCP connections on a loopback port.

    Args:
        port: The port.
        proc: The process that should listen; its exit fails the wait at once.
        log: Its output, shown if it fails.

    Raises:
        AssertionError: If it exits or does not listen in time.
    """

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(listening, f"a listener on port {port}")


def get_json(url: str, *, user: str | None = None, password: str | None = None) -> Any:
    """GET a JSON document, with basic auth when a user is given.

    Args:
        url: The address.
        user: Basic-auth user.
        password: Basic-auth password.

    Returns:
        The decoded document.

    Raises:
        urllib.error.HTTPError: On a status of 400 or more.
    """
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def http_status(url: str, **auth: str) -> int:
    """Return the HTTP status of a GET (see :func:`get_json` for ``auth``)."""
    try:
        get_json(url, **auth)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def redis_ids(redis_url: str, key: str) -> list[int]:
    """Return the image ids recorded under a Redis list key."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [int(item) for item in client.lrange(key, 0, -1)]
    finally:
        client.close()
