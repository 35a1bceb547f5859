"""Start-up cost of the ``panchro`` command line: wall time and modules imported per command.

Every run is a fresh process, as a user's is. The wall time is the median over ``--runs``
runs of the installed ``panchro`` script; the module count and the heavy libraries loaded
come from one more run of the same command in a child that reports ``sys.modules`` at
exit. The target is ``panchro --help`` in at most 0.3 s: help, and every command's
``--help``, must not import torch, SQLAlchemy, Celery, numpy, Pillow or boto3.

Usage::

    python benchmarks/startup.py                 # the default commands, 10 runs each
    python benchmarks/startup.py --runs 20
    python benchmarks/startup.py --command "status --help" --command "list --help"
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: Commands measured by default (arguments after ``panchro``).
DEFAULT_COMMANDS = (
    "--help",
    "run --help",
    "submit --help",
    "workers --help",
    "colorize --help",
    "list --help",
    "status --help",
    "scheduler --help",
    "doctor --help",
)
#: Libraries that help output must not import (each takes 0.05 to 1 s to import).
HEAVY = ("torch", "sqlalchemy", "celery", "numpy", "PIL", "boto3", "pydantic")
#: Target for ``panchro --help``, in seconds.
HELP_TARGET_S = 0.3

#: Runs the command line in this process and reports what it imported, at exit.
_CHILD = """
import sys
from panchro.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="panchro")
except SystemExit:
    pass
heavy = [name for name in {heavy!r} if name in sys.modules]
sys.stderr.write("\\n@@ %d %s\\n" % (len(sys.modules), ",".join(heavy) or "-"))
"""


def _script() -> list[str]:
    """The installed ``panchro`` script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("panchro")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "panchro.cli"]


def _wall(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - began


def _imports(args: list[str]) -> tuple[int, str]:
    code = _CHILD.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    last = [line for line in done.stderr.splitlines() if line.startswith("@@ ")][-1]
    _, count, heavy = last.split(" ", 2)
    return int(count), heavy


def main() -> None:
    """Measure each command and print one table row per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (median)")
    parser.add_argument(
        "--command",
        action="append",
        help="arguments after `panchro`, quoted (repeatable; default: the usual --help set)",
    )
    options = parser.parse_args()
    commands = options.command or list(DEFAULT_COMMANDS)
    script = _script()
    print(f"{'command':<32} {'median s':>9} {'min s':>7} {'modules':>8}  heavy imports")
    help_median = None
    for command in commands:
        args = shlex.split(command)
        _wall([*script, *args])  # warm the file cache
        times = [_wall([*script, *args]) for _ in range(options.runs)]
        count, heavy = _imports(args)
        median = statistics.median(times)
        if command == "--help":
            help_median = median
        print(f"{'panchro ' + command:<32} {median:>9.3f} {min(times):>7.3f} {count:>8}  {heavy}")
    if help_median is not None:
        verdict = "meets" if help_median <= HELP_TARGET_S else "MISSES"
        print(f"panchro --help: {help_median:.3f} s, {verdict} the {HELP_TARGET_S} s target")


if __name__ == "__main__":
    main()
