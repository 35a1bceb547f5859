"""Short commands end without Python's teardown of their modules, and lose nothing by it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from migrations.runner import upgrade
from panchro.quick_exit import exit_status

#: Runs ``panchro.cli.main`` as the console script does, with a teardown witness: an
#: object whose finaliser prints when Python frees the main module, and an atexit handler.
_PROBE = """
import atexit
import sys

class Witness:
    def __del__(self):
        print("modules torn down", file=sys.stderr, flush=True)

witness = Witness()
atexit.register(lambda: print("atexit handlers ran", file=sys.stderr))
sys.argv = ["panchro", *{arguments!r}]
from panchro.cli import main
main()
"""


def _panchro(*arguments: str) -> subprocess.CompletedProcess[str]:
    probe = _PROBE.format(arguments=list(arguments))
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)


@pytest.fixture
def catalog(tmp_path: Path) -> str:
    """A SQLite catalog with collection ``c`` of 300 registered images (nothing sent)."""
    source = tmp_path / "scans"
    source.mkdir()
    for index in range(300):
        Image.new("L", (8, 8), index % 256).save(source / f"scan{index:04d}.png")
    database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    upgrade(database)
    submitted = _panchro(
        "--database-url", database, "submit", str(source), "--collection", "c",
        "--output", str(tmp_path / "colour"), "--untrained", "--no-dispatch",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert "300 new" in submitted.stdout
    return database


def test_a_listing_arrives_whole_through_a_pipe_and_the_process_skips_teardown(
    catalog: str,
) -> None:
    done = _panchro("--database-url", catalog, "list", "c", "--format", "csv")

    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert len(rows) == 301 and rows[-1].split(",")[1] == "pending"
    assert "atexit handlers ran" in done.stderr
    assert "modules torn down" not in done.stderr


def test_errors_keep_their_exit_status_and_message(catalog: str) -> None:
    missing = _panchro("--database-url", catalog, "status", "nope")
    usage = _panchro("--database-url", catalog, "status", "--no-such-option")

    assert missing.returncode == 1 and "no collection with name 'nope'" in missing.stderr
    assert usage.returncode == 2 and "No such option" in usage.stderr
    assert "modules torn down" not in missing.stderr + usage.stderr


def test_other_commands_end_the_ordinary_way(catalog: str) -> None:
    # Long-running and file-writing commands keep Python's full exit.
    done = _panchro("--database-url", catalog, "db", "upgrade")

    assert done.returncode == 0, done.stderr
    assert "modules torn down" in done.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), ("message", 1)])
def test_the_status_is_the_one_sys_exit_gives(code: object, status: int) -> None:
    assert exit_status(code) == status


def test_threads_and_idle_thread_pools_are_waited_for_as_at_an_ordinary_exit() -> None:
    # A pool left without shutdown() would hold a plain join() for ever; Python's exit
    # hooks stop it, and a thread still working is waited for.
    probe = """
import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from panchro.quick_exit import exit_now

pool = ThreadPoolExecutor(2)
pool.submit(time.sleep, 0.01).result()
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
exit_now(4)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)

    assert done.returncode == 4
    assert done.stdout == "thread finished\n"
