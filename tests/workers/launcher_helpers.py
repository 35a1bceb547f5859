"""Stand-in workers for the launcher tests (a uniquely named module, importable from them).

A stand-in is a small Python program written to ``tmp_path`` that records what happens to
it (each start, each signal) in a file; :class:`Workers` writes it and builds the specs of
workers that run it.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

from workers.launcher import ChildSpec

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


def wait_until(condition: object, what: str) -> None:
    """Poll ``condition`` until it holds.

    Args:
        condition: A callable that returns whether the awaited thing happened.
        what: What is awaited, for the error message.

    Raises:
        AssertionError: ``condition`` still did not hold after :data:`WAIT_S` seconds.
    """
    assert callable(condition)
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
