"""Tests of scheduler.scanning: scanning a source with progress callbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from scheduler_testing import write_images

from scheduler import ScanProgress, scan_source
from storage.registry import open_storage


def test_scan_source_yields_images_in_key_order_and_reports_skips(tmp_path: Path) -> None:
    write_images(tmp_path, ["b/2.tif", "a.png", "b/1.jpg"])
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not an image")

    found, report = scan_source(tmp_path, storage=open_storage(tmp_path))
    assert report.found == 0, "nothing is listed before the iterator is consumed"
    assert [item.relative for item in found] == ["a.png", "b/1.jpg", "b/2.tif"]
    assert report.found == 3
    assert dict(report.skipped) == {"hidden": 1, "not-an-image": 1}


def test_scan_source_reports_progress_every_n_objects_and_at_the_end(tmp_path: Path) -> None:
    write_images(tmp_path, [f"{index:02d}.jpg" for index in range(5)])
    (tmp_path / "05.txt").write_text("not an image")
    seen: list[ScanProgress] = []

    found, _report = scan_source(
        tmp_path, storage=open_storage(tmp_path), on_progress=seen.append, progress_every=2
    )
    assert len(list(found)) == 5
    assert seen[-1] == ScanProgress(found=5, skipped=1, found_bytes=5 * 32, finished=True)
    assert [progress.finished for progress in seen] == [False] * (len(seen) - 1) + [True]
    # Six events (five images, one skip), a callback after every second one, then the end.
    assert len(seen) == 4
    assert [p.found + p.skipped for p in seen[:-1]] == [2, 4, 6]


def test_scan_source_refuses_a_progress_interval_below_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        scan_source(tmp_path, storage=open_storage(tmp_path), progress_every=0)
