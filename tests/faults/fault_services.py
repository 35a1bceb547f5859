"""Servers the fault suite owns, so that it may kill them: Redis with an append-only file,
a private PostgreSQL cluster, and a small file system that can fill up.

Unlike the shared services of ``tests/conftest.py``, each of these belongs to one fault
module: ``kill -9`` of its Redis or ``pg_ctl stop -m immediate`` of its PostgreSQL
disturbs nobody else. Each class says, through an ``unavailable()`` function, why it
cannot be had on this machine, so that the test that needs it can skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import _find_pg_binary

#: Seconds a server may take to start or stop.
SERVER_TIMEOUT_S = 60.0
#: Seconds between two looks at a starting server.
POLL_S = 0.1
#: OS user that owns a private PostgreSQL cluster when the tests run as root (initdb and
#: postgres refuse to run as root).
POSTGRES_OS_USER = "postgres"


def _wait(condition: object, what: str, timeout: float = SERVER_TIMEOUT_S) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- Redis


def redis_unavailable() -> str | None:
    """Why a private Redis cannot be started here, or None if it can."""
    return None if shutil.which("redis-server") else "redis-server is not installed"


class AofRedis:
    """A private ``redis-server`` that persists every write to its append-only file.

    ``appendfsync always``: a message the broker acknowledged to a client is on disk, so
    a ``kill -9`` and a restart on the same folder lose nothing that was written.

    Args:
        folder: Its data folder (the append-only file lives there).
        port: Its port on the loopback interface.
    """

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """URL of its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _pings(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        """Start it (again, on the same folder and port) and wait until it answers."""
        binary = shutil.which("redis-server")
        assert binary is not None, redis_unavailable()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir"]
        argv += [str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self.proc
        _wait(lambda: proc.poll() is not None or self._pings(), "redis-server answering")
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see its log")

    def kill(self) -> None:
        """``kill -9`` it and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop it for good."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=SERVER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()


# --------------------------------------------------------------------------- PostgreSQL


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def postgres_unavailable() -> str | None:
    """Why a private PostgreSQL cluster cannot be had here, or None if it can."""
    if not (_find_pg_binary("initdb") and _find_pg_binary("pg_ctl")):
        return "initdb and pg_ctl are not installed"
    if os.geteuid() == 0:
        if not _os_user_exists(POSTGRES_OS_USER):
            return f"running as root and there is no {POSTGRES_OS_USER!r} OS user to own it"
        if not shutil.which("runuser"):
            return "running as root and runuser is not installed"
    return None


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb, pg_ctl start, stop -m immediate.

    Run as the ``postgres`` OS user when the tests run as root. Its folder is made with
    ``tempfile`` (pytest's own folders are private to root). ``fsync`` is off: the
    faults kill processes, not the machine, and the kernel keeps what they wrote.

    Args:
        port: Its port on the loopback interface.
    """

    def __init__(self, port: int) -> None:
        reason = postgres_unavailable()
        assert reason is None, reason
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="panchro-faults-pg-"))
        self.data = self.folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self.folder, POSTGRES_OS_USER, POSTGRES_OS_USER)

    def _run(self, tool: str, *args: str) -> None:
        binary = _find_pg_binary(tool)
        assert binary is not None, postgres_unavailable()
        command = [binary, *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", POSTGRES_OS_USER, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SERVER_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} exited with {done.returncode}: {done.stderr.strip()}")

    @property
    def admin_url(self) -> str:
        """URL of its ``postgres`` database as the ``postgres`` role (trust auth)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster's files (initdb)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c fsync=off"
        log = str(self.folder / "log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start"
        )

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: every server process quits at once, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"panchro_faults_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its files."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- a small disk


def small_disk_unavailable() -> str | None:
    """Why a small file system cannot be mounted here, or None if it can."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs for the disk-full fault needs root"
    probe = Path(tempfile.mkdtemp(prefix="panchro-faults-mount-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


class SmallDisk:
    """A tmpfs of a few MiB, mounted on a folder, that a filler file can make full.

    Args:
        mount_point: An empty folder to mount it on.
        size_kib: Its size in KiB.
    """

    def __init__(self, mount_point: Path, size_kib: int) -> None:
        self.mount_point = mount_point
        self.size_kib = size_kib
        self.filler = mount_point / ".filler"

    def mount(self) -> None:
        """Mount it."""
        self.mount_point.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k", "tmpfs"]
            + [str(self.mount_point)],
            check=True,
        )

    def fill(self) -> None:
        """Write the filler file until the file system is full (ENOSPC)."""
        block = b"\0" * 4096
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            with contextlib.suppress(OSError):
                while os.write(fd, block):
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        """Remove the filler file."""
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        """Unmount it (lazily, should a process still hold a file there)."""
        subprocess.run(["umount", "-l", str(self.mount_point)], check=False)
