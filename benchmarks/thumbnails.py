"""Time a done image's thumbnail pair: what ``workers.thumbnails`` adds to every image.

For each scan shape the worker may hold, it times what ``write_thumbnail_files`` does (the
pair is recorded in the transaction that records the image done): reduce the original's
pixels and the colorized copy's (already in memory) to ~256 px sRGB JPEGs, and write both
with the no-clobber write of ``LocalStorage``. The median of ``--runs`` runs, on one
thread, in milliseconds per image.

Usage::

    python benchmarks/thumbnails.py
    python benchmarks/thumbnails.py --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from storage import LocalStorage
from workers.thumbnails import _write, make_thumbnail, thumbnail_uris

#: (label, original's shape, dtype): the shapes of typical scans.
SHAPES = (
    ("6 MP gray 8-bit", (2000, 3000), np.uint8),
    ("24 MP gray 8-bit", (4000, 6000), np.uint8),
    ("24 MP gray 16-bit", (4000, 6000), np.uint16),
    ("24 MP RGB 8-bit", (4000, 6000, 3), np.uint8),
    ("100 MP gray 16-bit", (8000, 12500), np.uint16),
)


def _time_pair(original: np.ndarray, copy: np.ndarray, folder: Path, runs: int) -> float:
    store = LocalStorage()
    times = []
    for run in range(runs):
        source_uri, output_uri = thumbnail_uris(str(folder), f"{folder}/image-{run}.tif")
        began = time.perf_counter()
        _write(store, source_uri, make_thumbnail(original))
        _write(store, output_uri, make_thumbnail(copy))
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000.0


def main() -> None:
    """Print one row per scan shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="Runs per shape (median shown).")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'original':<20} {'ms per image (pair)':>20}")
    with tempfile.TemporaryDirectory() as folder:
        for label, shape, dtype in SHAPES:
            top = np.iinfo(dtype).max
            original = rng.integers(0, top, size=shape, dtype=dtype)
            copy = rng.integers(0, top, size=(*shape[:2], 3), dtype=dtype)
            print(f"{label:<20} {_time_pair(original, copy, Path(folder), args.runs):>20.1f}")


if __name__ == "__main__":
    main()
