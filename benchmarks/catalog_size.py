"""What a worker's per-image catalog work costs as the catalog grows to many collections.

Before each write, a worker asks which collections' sources hold the output it is about
to write (no original of any collection is ever written). That used to parse and resolve,
links followed, every collection's source for every image; each stored location is now
resolved at most once every ``workers.outputs.RESOLVED_TTL_S`` seconds per process.

A fresh PostgreSQL catalog is filled with ``N`` empty collections (each with its own
local source folder, ``--depth`` folders deep), then one more collection of ``--images``
small grayscale PNGs is processed with ``workers.process.process_image`` (claim, read,
a 1x1-convolution stand-in network at 256 px, write, thumbnails, done), one image at a
time, as a worker does. Printed: milliseconds per image, the median of ``--rounds``
collections, with every location resolved for every image (as before, TTL 0) and with
the resolution reused (now), for each ``N``.

Usage::

    python benchmarks/catalog_size.py                    # about two minutes
    python benchmarks/catalog_size.py --collections 1 1000 5000 --images 20

``PANCHRO_BENCH_DATABASE_URL`` names a PostgreSQL database whose role may create
databases (default: the local ``test`` database).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_servers import fresh_database, queue_folder
from PIL import Image as PILImage
from torch import nn

from catalog import make_sessionmaker
from ddcolor.pipeline import Colorizer
from storage import LocalStorage
from workers import outputs
from workers.process import process_image

#: Input size of the stand-in network, in pixels (the smallest allowed).
INPUT_SIZE = 256
#: PostgreSQL used when PANCHRO_BENCH_DATABASE_URL is unset.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class _StandIn(nn.Module):
    """Bx3xSxS in, Bx2xSxS out: one 1x1 convolution, so the catalog's work shows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (Markdown).

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--collections", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--images", type=int, default=12, help="images per measured collection")
    parser.add_argument("--rounds", type=int, default=3, help="measured collections per cell")
    parser.add_argument("--depth", type=int, default=6, help="folders above each source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    admin_url = os.environ.get("PANCHRO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    colorizer = Colorizer(
        _StandIn(), model_name="stand-in", device="cpu", precision="fp32", size=INPUT_SIZE
    )
    store = LocalStorage()
    names = [f"p{number:03d}.png" for number in range(args.images)]
    lines = [
        "| other collections in the catalog | ms per image, every location resolved each "
        "time (before) | ms per image, resolved once per TTL (now) |",
        "|---:|---:|---:|",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="panchro-bench-") as tmp,
        fresh_database(admin_url) as url,
    ):
        work = Path(tmp)
        scans = work / "scans"
        scans.mkdir()
        pixels = np.tile(np.arange(96, dtype=np.uint8), (72, 1))
        for name in names:
            PILImage.fromarray(pixels).save(scans / name)
        sessions = make_sessionmaker(url)
        deep = Path(work, *[f"level {level}" for level in range(args.depth)])
        made = 0
        measured = 0

        def process(ids: list[int]) -> float:
            """Process the images one at a time; milliseconds per image."""
            began = time.perf_counter()
            for image_id in ids:
                process_image(
                    image_id,
                    sessions=sessions,
                    storage_for=lambda uri: store,
                    colorizer=colorizer,
                    worker="cpu0@bench",
                )
            return (time.perf_counter() - began) / len(ids) * 1000

        process(
            queue_folder(sessions, "warm-up", scans, names, work / "warm-up", INPUT_SIZE)
        )  # first-call costs
        for count in sorted(args.collections):
            while made < count:
                box = f"box {made}"
                queue_folder(sessions, box, deep / box, [], work / "out" / box, INPUT_SIZE)
                made += 1
            cells = []
            for ttl in (0.0, outputs.RESOLVED_TTL_S):
                setattr(outputs, "RESOLVED_TTL_S", ttl)  # noqa: B010 - a Final, set for the run
                per_round = []
                for _ in range(args.rounds):
                    measured += 1
                    output = work / "colour" / str(measured)
                    ids = queue_folder(
                        sessions, f"measured {measured}", scans, names, output, INPUT_SIZE
                    )
                    per_round.append(process(ids))
                cells.append(statistics.median(per_round))
            lines.append(f"| {count:,} | {cells[0]:.1f} | {cells[1]:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
        sessions.kw["bind"].dispose()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
