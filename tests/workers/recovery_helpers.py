"""Helpers of the recovery tests (a uniquely named module, importable from them).

- A real colorize worker (the project's app, task and recovery steps, prefork with one
  pool process) whose network holds every image while a "hold" file exists, so a test can
  break things while an image is ``running``. Run as a script:
  ``python recovery_helpers.py BROKER DATABASE NODE HOLD [TIME_LIMIT] [batch=N]`` (the
  warm-up pass at process start is never held); with a time limit the network also
  ignores the soft limit, so only the hard kill stops it; with a batch size the worker
  colorizes N images per forward.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Seconds a test waits for something; a guard against hanging, not a measurement.
WAIT_S = 90.0


def wait_for(condition: Any, what: str, *, every: Any = None) -> float:
    """Poll ``condition`` until it holds; return the seconds it took.

    Args:
        condition: A callable that returns whether the awaited thing happened.
        what: What is awaited, for the error message.
        every: Called at each poll (a dispatch pass, for example), or None.

    Raises:
        AssertionError: ``condition`` still did not hold after :data:`WAIT_S` seconds.
    """
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > WAIT_S:
            raise AssertionError(f"gave up waiting for {what}")
        if every is not None:
            every()
        time.sleep(0.1)
    return time.monotonic() - began


def unused_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_command(
    broker_url: str,
    database_url: str,
    node: str,
    hold: Path,
    *,
    time_limit: float | None = None,
    batch: int | None = None,
) -> list[str]:
    """The command line of a held worker (see the module's text)."""
    argv = [sys.executable, str(Path(__file__).resolve()), broker_url, database_url, node]
    argv.append(str(hold))
    if time_limit is not None:
        argv.append(str(time_limit))
    if batch is not None:
        argv.append(f"batch={batch}")
    return argv


def worker_environment() -> dict[str, str]:
    """The environment of a held worker: this folder and the project importable."""
    here = Path(__file__).resolve().parent
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parents[1])]))


def start_worker(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a held worker in its own process group, its output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parent,
            env=worker_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Kill a worker and every process of its group, once its test is over.

    Nothing is checked after this: a warm shutdown would only add its seconds.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def pool_pids(worker_pid: int) -> list[int]:
    """Pids of the direct children of a process (the pool processes of a Celery worker)."""
    return [
        int(pid)
        for path in Path(f"/proc/{worker_pid}/task").glob("*/children")
        for pid in path.read_text().split()
    ]


def _run(argv: list[str]) -> None:
    import torch
    from torch import nn
    from workers_helpers import StubNet, run_worker, stub_colorizer

    broker_url, database_url, node, hold = argv[:4]
    extra = [arg for arg in argv[4:] if not arg.startswith("batch=")]
    batches = [int(arg.removeprefix("batch=")) for arg in argv[4:] if arg.startswith("batch=")]
    time_limit = float(extra[0]) if extra else None

    class Held(nn.Module):
        """Waits while the hold file exists; with a time limit, shrugs off the soft one."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = StubNet()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from celery.exceptions import SoftTimeLimitExceeded

            # The first pass is the warm-up at process start, not an image.
            self.calls += 1
            deadline = time.monotonic() + WAIT_S
            while self.calls > 1 and os.path.exists(hold) and time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except SoftTimeLimitExceeded:
                    if time_limit is None:
                        raise
            out: torch.Tensor = self.inner(x)
            return out

    limits: dict[str, Any] = {}
    if time_limit is not None:
        limits = {"soft_time_limit": time_limit / 2, "time_limit": time_limit}
    run_worker(
        broker_url,
        database_url,
        node,
        colorizer_factory=lambda _: stub_colorizer(Held()),
        batch_size=batches[0] if batches else None,
        **limits,
    )


if __name__ == "__main__":
    _run(sys.argv[1:])
