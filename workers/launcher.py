"""One Celery worker process per device, supervised: ``panchro workers``.

The launcher is a small parent process. It starts each worker as a separate program
(``celery worker --pool=prefork --concurrency=1`` on one device, built by
:func:`workers.commandline.worker_argv`), restarts a worker that dies, and stops them all
on a signal::

    children = [ChildSpec("gpu0@render-07", argv, env), ...]
    outcomes = Supervisor(children).run()      # returns when every worker has stopped

Shutdown follows Celery's own signals. The first SIGTERM or SIGINT the launcher receives
is passed on as one SIGTERM to each worker: a warm shutdown, which lets the running image
finish. A second signal (or a SIGQUIT) is passed on as SIGQUIT: a cold shutdown, which
stops the running tasks; their messages go back to the queue (``task_acks_late``). The
workers run in their own process group, so a Ctrl-C in a terminal reaches only the
launcher and never turns into a second, cold, signal on its way. On Linux each worker is
also asked to receive SIGTERM when the launcher itself dies, so none is left behind.

A worker that exits with a non-zero code or is killed is started again after a delay that
doubles with each consecutive failure. A run that lasted ``stable_after_s`` resets the
count; after ``max_failures`` short runs in a row the launcher gives up on that worker,
says so, and keeps the others running. A worker that exits with code 0 stopped on
purpose and is not restarted: a remote ``shutdown`` command (from Flower, for example).
Neither is one that exits with ``EX_CONFIG`` (78): it stopped because it cannot work
(unloadable or other weights, storage credentials refused; its log's CRITICAL line says
why), handing its message back, and restarting it would only meet the same fault. The
launcher says so; once no worker is left it exits with ``EX_CONFIG`` too.

When a worker exits, its whole process group is killed (a pool process that outlived
its worker must not finish an image the restarted worker gets again) and the images it
was running are given back in the catalog (:class:`workers.releaser.NodeReleaser`), so
they run again within seconds instead of after Redis's visibility timeout. Their messages, still
unacknowledged in Redis, are put back by the scheduler's reaper or, at the latest, by the
visibility-timeout sweep, and then find nothing to do; see ``docs/workers.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from workers.errors import EX_CONFIG

logger = logging.getLogger(__name__)

#: Seconds before the first restart of a worker that failed.
RESTART_DELAY_S = 1.0
#: Seconds the restart delay doubles up to.
MAX_RESTART_DELAY_S = 60.0
#: Seconds a worker must run for its failure to count as a new problem, not a crash loop.
STABLE_AFTER_S = 120.0
#: Short-lived failures in a row after which a worker is given up.
MAX_FAILURES = 5
#: Longest wait, in seconds, between two checks when no signal can wake the launcher
#: (it runs outside the main thread).
_POLL_S = 0.5
#: Longest wait, in seconds, between two checks of the workers in the main thread (a
#: safety net; a dying worker wakes the launcher at once through SIGCHLD).
_IDLE_S = 5.0
#: ``prctl`` option that sends a signal to a process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """A worker process to run.

    Attributes:
        name: Its node name, used in every log line about it.
        argv: The program and its arguments.
        env: Its complete environment.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RestartPolicy:
    """When a worker that died is started again.

    Attributes:
        initial_delay_s: Seconds before the first restart; it doubles with each
            failure in a row.
        max_delay_s: Longest delay, in seconds.
        stable_after_s: Seconds of running after which a failure starts a new count.
        max_failures: Short-lived failures in a row after which the worker is given up.
    """

    initial_delay_s: float = RESTART_DELAY_S
    max_delay_s: float = MAX_RESTART_DELAY_S
    stable_after_s: float = STABLE_AFTER_S
    max_failures: int = MAX_FAILURES

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows ``failures`` failures in a row.

        Args:
            failures: Failures in a row so far (at least 1).

        Returns:
            ``initial_delay_s`` doubled per earlier failure, at most ``max_delay_s``.
        """
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** max(failures - 1, 0)))


@dataclass(frozen=True)
class ChildOutcome:
    """How one worker ended.

    Attributes:
        name: Its node name.
        exit_code: Its last exit code; negative when a signal killed it, None if it
            never started.
        starts: How many times it was started.
        gave_up: Whether the launcher stopped restarting it after a crash loop.
        cannot_work: Whether it stopped because it cannot work (exit ``EX_CONFIG``).
    """

    name: str
    exit_code: int | None
    starts: int
    gave_up: bool
    cannot_work: bool = False


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    failures: int = 0
    restart_at: float | None = None
    exit_code: int | None = None
    gave_up: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def active(self) -> bool:
        return self.proc is not None or self.restart_at is not None


class Supervisor:
    """Runs worker processes until all have stopped; restarts the ones that fail."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[str], object] | None = None,
    ) -> None:
        """Prepare the workers; nothing starts before :meth:`run`.

        Args:
            children: The workers, each with a unique name.
            policy: When failed workers are restarted; None for the defaults.
            clock: Monotonic clock in seconds.
            release: Called with a worker's name after each of its exits, once its
                whole process group is gone, to give up the tries it held
                (:class:`NodeReleaser`); None for nothing.

        Raises:
            ValueError: If there is no worker or two share a name.
        """
        if not children:
            raise ValueError("no worker to run")
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique: {', '.join(names)}")
        self._children = [_Child(spec) for spec in children]
        self._release = release
        self._policy = policy or RestartPolicy()
        self._clock = clock
        self._requests: list[int] = []
        self._stops = 0
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def request_stop(self, *, cold: bool = False) -> None:
        """Ask the workers to stop, as a signal would; safe to call from any thread.

        Args:
            cold: Stop at once (SIGQUIT) instead of letting running tasks finish.
        """
        self._requests.append(signal.SIGQUIT if cold else signal.SIGTERM)
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def run(self) -> list[ChildOutcome]:
        """Start every worker and supervise them until all have stopped.

        In the main thread, SIGTERM, SIGINT and SIGQUIT are handled (see the module
        docstring) for as long as this runs; elsewhere only :meth:`request_stop` stops.

        Returns:
            How each worker ended, in the order given.
        """
        restore = self._install_signals()
        try:
            now = self._clock()
            for child in self._children:
                self._start(child, now)
            while any(child.active for child in self._children):
                self._wait(self._timeout())
                now = self._clock()
                while self._requests:
                    self._stop_all(self._requests.pop(0))
                for child in self._children:
                    if child.proc is not None and child.proc.poll() is not None:
                        self._on_exit(child, now)
                    elif child.restart_at is not None and child.restart_at <= now:
                        self._start(child, now)
        finally:
            restore()
            self._abandon()
            self._reader.close()
            self._writer.close()
        return [
            ChildOutcome(
                child.spec.name,
                child.exit_code,
                child.starts,
                child.gave_up,
                cannot_work=child.exit_code == EX_CONFIG,
            )
            for child in self._children
        ]

    def _start(self, child: _Child, now: float) -> None:
        child.restart_at = None
        try:
            child.proc = subprocess.Popen(
                list(child.spec.argv),
                env=dict(child.spec.env),
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            logger.error("cannot start worker %s: %s", child.spec.name, exc)
            child.proc = None
            child.exit_code = None
            self._after_failure(child, now, ran=0.0)
            return
        child.started_at = now
        child.starts += 1
        logger.info("started worker %s (pid %d)", child.spec.name, child.proc.pid)

    def _on_exit(self, child: _Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        # Pool processes that outlived their worker (killed alone) must not finish an
        # image the restarted worker gets again: the whole group goes.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc = None
        child.exit_code = code
        self._release_tries(child)
        ran = now - child.started_at
        logger.info(
            "worker %s exited with %s after %.1f s", child.spec.name, _describe_exit(code), ran
        )
        if code == EX_CONFIG:
            logger.error(
                "worker %s stopped because it cannot work (its CRITICAL line above says "
                "why); it handed its image back and is not restarted: fix its configuration, "
                "then start it again",
                child.spec.name,
            )
            return
        if self._stops:
            return
        if code == 0:
            logger.warning(
                "worker %s stopped on its own with exit code 0 (a remote shutdown, or a "
                "worker that found it cannot work: see its log); it is not restarted",
                child.spec.name,
            )
            return
        self._after_failure(child, now, ran=ran)

    def _release_tries(self, child: _Child) -> None:
        if self._release is None:
            return
        try:
            self._release(child.spec.name)
        except Exception as exc:  # noqa: BLE001 - the scheduler's reaper releases them later
            logger.error("cannot release the tries of worker %s: %s", child.spec.name, exc)

    def _after_failure(self, child: _Child, now: float, *, ran: float) -> None:
        policy = self._policy
        child.failures = 1 if ran >= policy.stable_after_s else child.failures + 1
        if child.failures >= policy.max_failures:
            child.gave_up = True
            logger.error(
                "worker %s failed %d times in a row, each within %.0f s of starting "
                "(last: %s); giving up on it, the other workers keep running. "
                "Its log above says why; restart the launcher once that is fixed.",
                child.spec.name,
                child.failures,
                policy.stable_after_s,
                _describe_exit(child.exit_code),
            )
            return
        delay = policy.delay(child.failures)
        child.restart_at = now + delay
        logger.warning(
            "restarting worker %s in %.1f s (failure %d in a row; gives up at %d)",
            child.spec.name,
            delay,
            child.failures,
            policy.max_failures,
        )

    def _stop_all(self, signum: int) -> None:
        self._stops += 1
        cold = signum == signal.SIGQUIT or self._stops > 1
        forward = signal.SIGQUIT if cold else signal.SIGTERM
        running = [child for child in self._children if child.proc is not None]
        logger.warning(
            "received %s: %s shutdown of %d worker(s)%s",
            signal.Signals(signum).name,
            "cold" if cold else "warm",
            len(running),
            "; running tasks are stopped and requeued"
            if cold
            else " after their running tasks; signal again for a cold shutdown",
        )
        for child in self._children:
            if child.restart_at is not None:
                child.restart_at = None
                logger.info("worker %s will not be restarted", child.spec.name)
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, forward)

    def _timeout(self) -> float:
        cap = _IDLE_S if threading.current_thread() is threading.main_thread() else _POLL_S
        due = [child.restart_at for child in self._children if child.restart_at is not None]
        if not due:
            return cap
        return max(0.0, min(cap, min(due) - self._clock()))

    def _wait(self, timeout: float) -> None:
        with contextlib.suppress(InterruptedError):
            select.select([self._reader], [], [], timeout)
        with contextlib.suppress(BlockingIOError, OSError):
            while self._reader.recv(4096):
                pass

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._requests.append(signum)

        def on_child(signum: int, frame: FrameType | None) -> None:
            # Nothing to do here: the wakeup fd has already woken the loop.
            pass

        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        previous: dict[int, Any] = {sig: signal.signal(sig, on_stop) for sig in stops}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, on_child)
        old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _abandon(self) -> None:
        # Only reached with workers still running when run() fails: never leave them
        # without a parent that waits for them.
        for child in self._children:
            if child.proc is not None and child.proc.poll() is None:
                logger.error("stopping worker %s: the launcher is failing", child.spec.name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)


def exit_status(outcomes: Sequence[ChildOutcome]) -> int:
    """Return the launcher's exit status for how its workers ended.

    Args:
        outcomes: What :meth:`Supervisor.run` returned.

    Returns:
        ``EX_CONFIG`` (78) if any worker stopped because it cannot work (a service
        manager should not restart the launcher into the same fault: systemd's
        ``RestartPreventExitStatus=78``), else 1 if any worker was given up after a
        crash loop, else 0.
    """
    if any(outcome.cannot_work for outcome in outcomes):
        return EX_CONFIG
    return 1 if any(outcome.gave_up for outcome in outcomes) else 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no process"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """Return a pre-exec hook that makes the child get SIGTERM when the launcher dies."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, in the parent: the hook runs between fork and exec, where as little
    # as possible should happen.
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            # The launcher died before prctl took effect.
            os.kill(os.getpid(), signal.SIGTERM)

    return hook
