"""One ``panchro run`` per output: a second is refused at once, a killed one's lock is free.

Both tests run the real command in child processes on a folder of small images.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from catalog.engine import SQLITE_BUSY_TIMEOUT_MS
from migrations.runner import upgrade
from panchro.run_lock import hold_run_lock
from storage.uri import parse_uri

#: Images in the collection: enough that a run is still busy when the test acts (each
#: takes a second or more through the model, the test acts within a tenth of one).
IMAGES = 4
#: Seconds a run may take; a guard against hanging, not a measurement.
RUN_S = 300.0


def _scans(root: Path) -> Path:
    root.mkdir()
    ramp = np.linspace(0, 255, 64 * 48).reshape(48, 64).astype(np.uint8)
    for index in range(IMAGES):
        PILImage.fromarray(np.roll(ramp, index, axis=1), mode="L").save(root / f"p{index}.png")
    return root


def _argv(source: Path, dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "panchro.cli",
        "run",
        str(source),
        "--output",
        str(dest),
        "--untrained",
        "--size",
        "256",
        "--prefetch",
        "0",
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANCHRO_")}
    return {
        **clean,
        "PANCHRO_WEIGHTS_DIR": str(tmp_path / "weights"),
        "PANCHRO_DEVICE": "cpu",
        "PANCHRO_PRECISION": "fp32",
        "OMP_NUM_THREADS": "1",
    }


def _rows(dest: Path, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    except OperationalError:  # the run is still creating its schema
        return []
    finally:
        engine.dispose()


def _holder_pid(dest: Path) -> int | None:
    try:
        return int(json.loads((dest / ".panchro" / "run.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _wait(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + RUN_S
    while not condition():
        assert proc.poll() is None, f"the first run ended early waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _start(source: Path, dest: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _argv(source, dest),
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _every_image_done_once(dest: Path) -> None:
    assert _rows(dest, "SELECT status, count(*) FROM images GROUP BY status") == [("done", IMAGES)]
    done_attempts = _rows(
        dest, "SELECT image_id, count(*) FROM attempts WHERE outcome = 'done' GROUP BY image_id"
    )
    assert len(done_attempts) == IMAGES and {count for _, count in done_attempts} == {1}
    assert sorted(path.name for path in dest.glob("*.png")) == [
        f"p{index}.png" for index in range(IMAGES)
    ]


@pytest.mark.slow
def test_a_second_run_on_one_output_is_refused_and_the_first_is_unharmed(
    tmp_path: Path,
) -> None:
    source, dest = _scans(tmp_path / "scans"), tmp_path / "colour"
    first = _start(source, dest, tmp_path)
    try:
        _wait(lambda: _holder_pid(dest) == first.pid, "the first run's lock", first)
        # Frozen, it holds the lock but cannot finish before the second run has asked.
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run(
            _argv(source, dest), env=_env(tmp_path), capture_output=True, text=True, timeout=RUN_S
        )
        os.kill(first.pid, signal.SIGCONT)
        first_err = first.communicate(timeout=RUN_S)[1].decode(errors="replace")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

    lines = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
    assert second.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("Error: another `panchro run` (pid "), lines
    assert f"pid {first.pid} on " in lines[0] and str(dest) in lines[0], lines
    assert first.returncode == 0, first_err
    _every_image_done_once(dest)


@pytest.mark.slow
def test_the_lock_of_a_run_killed_with_sigkill_is_taken_over(tmp_path: Path) -> None:
    source, dest = _scans(tmp_path / "scans"), tmp_path / "colour"
    first = _start(source, dest, tmp_path)
    try:
        _wait(
            lambda: bool(_rows(dest, "SELECT 1 FROM images WHERE status = 'done'")),
            "the first run to colorize an image",
            first,
        )
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert _holder_pid(dest) == first.pid  # the file stays; the lock died with its holder

    second = subprocess.run(
        _argv(source, dest), env=_env(tmp_path), capture_output=True, text=True, timeout=RUN_S
    )

    assert second.returncode == 0, second.stdout + second.stderr
    assert "another `panchro run`" not in second.stderr
    _every_image_done_once(dest)


def test_a_second_run_is_refused_before_it_reads_a_catalog_being_written(
    tmp_path: Path,
) -> None:
    source, dest = _scans(tmp_path / "scans"), tmp_path / "colour"
    catalog = dest / ".panchro" / "catalog.sqlite3"
    upgrade(f"sqlite:///{catalog}")
    # This process stands for a first run caught in the middle of a write: it holds the
    # output's lock and the catalog's write lock, which a reader would wait for.
    with hold_run_lock(catalog.parent, str(parse_uri(str(dest)))):
        writer = sqlite3.connect(catalog, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            # Bounded by the catalog's busy timeout: a second run that read the catalog
            # first would wait that long for the writer before it reached the lock.
            second = subprocess.run(
                _argv(source, dest),
                env=_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000 - 5,
            )
        finally:
            writer.rollback()
            writer.close()

    assert second.returncode == 1, second.stdout + second.stderr
    assert "Error: another `panchro run` (pid " in second.stderr
    assert f"pid {os.getpid()} on " in second.stderr
