"""Checks of ``benchmarks/gpu_check.sh`` that need no GPU: syntax, no-GPU exit, dry run.

The script runs the GPU checks on a fresh GPU machine; here it must say "no GPU" and stop
within seconds, and its dry run must list every step under the time budget.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

#: The script under test.
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
#: Seconds the no-GPU and dry runs may take (they start no Python).
QUICK_S = 10
#: The steps of a run on a GPU machine, in order.
STEPS = ("gpu", "venv", "torch", "tests", "colour_ops", "pipeline", "model", "batching")


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    # Only the system folders: a GPU tool installed elsewhere is not found.
    env = {
        "PATH": "/usr/bin:/bin",
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    began = time.monotonic()
    done = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_S * 3,
        check=False,
    )
    return done, time.monotonic() - began


@pytest.fixture(autouse=True)
def _no_gpu_tool() -> None:
    for tool in ("nvidia-smi", "rocm-smi"):
        if shutil.which(tool, path="/usr/bin:/bin"):
            pytest.skip(f"{tool} is installed here: the no-GPU behaviour cannot be seen")


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_it_says_so_and_stops_at_once(tmp_path: Path) -> None:
    done, seconds = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout
    assert seconds < QUICK_S
    assert (tmp_path / "out" / "summary.txt").read_text().strip().endswith("nothing checked")
    assert "no GPU" in (tmp_path / "out" / "gpu_check.log").read_text()
    assert not (tmp_path / "work" / "venv").exists()


def test_dry_run_lists_every_step_with_its_limit_and_runs_nothing(tmp_path: Path) -> None:
    done, seconds = _run(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert seconds < QUICK_S
    for name in STEPS:
        assert f"gpu_check: {name}: " in done.stdout, name
    assert "-m cuda" in done.stdout and "--device cuda:0" in done.stdout
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.count("dry run") == len(STEPS)
    assert not (tmp_path / "work" / "venv").exists()


def test_steps_that_do_not_fit_the_budget_are_skipped_and_fail_the_run(tmp_path: Path) -> None:
    done, _ = _run(tmp_path, "--dry-run", "--budget", "20")
    assert done.returncode == 1
    assert "SKIPPED, only" in done.stdout
    assert "skipped (budget)" in (tmp_path / "out" / "summary.txt").read_text()


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    done, _ = _run(tmp_path, "--fast")
    assert done.returncode == 2
    assert "unknown option --fast" in done.stderr
