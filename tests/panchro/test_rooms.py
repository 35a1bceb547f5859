"""The start-up check that every room of panchro is panchro's own (panchro/rooms.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from panchro.rooms import ROOMS, stray_rooms

REPO = Path(__file__).resolve().parents[2]


def test_stray_rooms_is_empty_for_this_installation() -> None:
    assert stray_rooms() == []


def test_stray_rooms_names_every_room_missing_from_another_home(tmp_path: Path) -> None:
    strays = stray_rooms(home=tmp_path)
    assert [stray.name for stray in strays] == list(ROOMS)
    assert all(stray.found is not None and stray.found.parent == REPO for stray in strays)


def test_panchro_refuses_to_start_when_another_package_shadows_a_room(tmp_path: Path) -> None:
    other = tmp_path / "storage"
    other.mkdir()
    (other / "__init__.py").write_text("raise RuntimeError('imported the wrong storage')\n")
    # -S skips site's .pth files, so an editable install's finder cannot hide the clash;
    # the path then reads as a plain installation would: the other package first.
    path = [str(tmp_path), str(REPO), sysconfig.get_paths()["purelib"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-S", "-c", "from panchro.entry import main; main()", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "'storage' resolves to" in done.stderr
    assert "its own virtual environment" in done.stderr
    assert "imported the wrong storage" not in done.stderr
