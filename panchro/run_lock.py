"""One ``panchro run`` per output: a lock file beside the run's SQLite catalog.

Two runs on one output would share its catalog: the second one's start-up recovery hands
back the images the first is colorizing (they look abandoned), and both then colorize
them. The lock keeps the second run out before it touches the catalog.

It is a POSIX record lock (``fcntl.lockf``) on ``.panchro/run.lock`` (for an S3 output,
``.panchro/run-<hash of the output>.lock`` in the working directory, where its catalog
is). The kernel releases it when its holder exits, however it exits, ``kill -9``
included, so a lock is never left stale; the file stays, holding the last holder's pid,
host and start time, which the refusal quotes. Record locks work on local disks and on
NFS (through its lock manager).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import click

__all__ = ["LOCK_NAME", "hold_run_lock", "lock_path"]

#: Name of the lock file of a local output, in its ``.panchro`` folder.
LOCK_NAME: Final = "run.lock"


def lock_path(folder: Path, output: str) -> Path:
    """Return the lock file of a run's output.

    Args:
        folder: The folder of the run's catalog.
        output: The run's output location (normalised: ``str(parse_uri(...))``).

    Returns:
        ``folder/run.lock`` for a local output (its catalog is its own); for an S3
        output, whose catalog folder may serve several, a name of its own.
    """
    if not output.startswith("s3://"):
        return folder / LOCK_NAME
    digest = hashlib.sha256(output.encode()).hexdigest()[:16]
    return folder / f"run-{digest}.lock"


@contextmanager
def hold_run_lock(folder: Path, output: str) -> Iterator[Path]:
    """Hold the lock of an output for the duration of the block.

    Args:
        folder: The folder of the run's catalog (created if missing).
        output: The run's output location, as the refusal shows it.

    Yields:
        The lock file.

    Raises:
        click.ClickException: If another run holds the lock (naming it), or the lock
            file cannot be created.
    """
    path = lock_path(folder, output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise click.ClickException(f"cannot create the run's lock file {path}: {exc}") from exc
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise click.ClickException(f"cannot lock {path}: {exc}") from exc
            raise click.ClickException(
                f"another `panchro run` ({_holder(path)}) is writing to {output}; wait for "
                "it to finish, or stop it, then run this command again"
            ) from exc
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        # Closing the only descriptor of the file releases the lock.
        os.close(fd)


def _holder(path: Path) -> str:
    """Describe the holder recorded in a lock file, as far as it can be read."""
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that is just starting"
