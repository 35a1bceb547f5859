"""Throughput of colorizing in batches: images per second at batch sizes 1, 2 and 4.

Synthetic grayscale scans of 2000x1500 pixels (smooth random tones with a few edges,
different for each image) are colorized at input size 512, on the CPU unless ``--device``
names a GPU, by the real path:

- ``model``: ``ddcolor.batching.colorize_images`` with a colorizer loaded once, the path
  a worker takes: each scan's network input, one forward per batch, each scan composed
  at full resolution (what batching changes, and all of it);
- ``worker`` (``--worker``): ``workers.embedded.process_many`` on a SQLite catalog, as
  ``panchro run --batch N`` runs it: claim, read and decode (read ahead on two threads),
  colorize, encode a PNG, write, record.

The weights are the untrained ``ddcolor_paper_tiny`` (or ``ddcolor_paper`` with
``--model large``): the colours are meaningless, the work is the real network's. Each
batch size is warmed up once, then the sizes run interleaved, in a rotating order per
round (1, 2, 4, then 2, 4, 1, ...), so that a drift in the speed of a shared machine shows
in the spread instead of passing for a gain. The load average is printed before and after.

Usage::

    python benchmarks/batching.py                       # 8 scans, 3 rounds, model path
    python benchmarks/batching.py --worker --images 8 --rounds 2 --threads 2
    python benchmarks/batching.py --device cuda:0 --precision fp16 --model large \
        --batch 1 --batch 4 --batch 8 --images 16      # a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

#: Sides of a synthetic scan, in pixels (width, height).
SCAN_SIZE = (2000, 1500)
#: Input size of the network, in pixels.
INPUT_SIZE = 512
#: Batch sizes compared by default.
BATCHES = (1, 2, 4)


def synthetic_scans(count: int, seed: int = 11) -> list[np.ndarray]:
    """Return ``count`` HxW uint8 grey scans with smooth tones and a few sharp edges."""
    rng = np.random.default_rng(seed)
    width, height = SCAN_SIZE
    scans = []
    for _ in range(count):
        coarse = rng.integers(20, 235, (height // 100 + 1, width // 100 + 1)).astype(np.float32)
        image = PILImage.fromarray(coarse.astype(np.uint8)).resize(
            (width, height), PILImage.Resampling.BICUBIC
        )
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 4, (height, width))
        scans.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return scans


def model_runner(
    model_name: str, scans: list[np.ndarray], device: str, precision: str
) -> Callable[[int], float]:
    """Return a function that colorizes every scan at a batch size and returns seconds."""
    from ddcolor.batching import colorize_images
    from ddcolor.pipeline import load_colorizer

    colorizer = load_colorizer(
        None, untrained=True, model=model_name, device=device, precision=precision, size=INPUT_SIZE
    )
    print(f"  {colorizer!r}")

    def run(batch: int) -> float:
        if colorizer.device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for start in range(0, len(scans), batch):
            for entry in colorize_images(colorizer, scans[start : start + batch]):
                assert not isinstance(entry, Exception), entry
        return time.perf_counter() - began

    return run


def worker_runner(model_name: str, scans: list[np.ndarray], folder: Path) -> Callable[[int], float]:
    """Return a function that runs ``process_many`` on the scans (as PNG files) at a batch size."""
    from bench_servers import queue_folder

    from catalog import make_sessionmaker
    from ddcolor.pipeline import load_colorizer
    from migrations import upgrade
    from storage import LocalStorage
    from workers.embedded import process_many

    source = folder / "scans"
    source.mkdir()
    for index, scan in enumerate(scans):
        PILImage.fromarray(scan).save(source / f"{index:03d}.png", compress_level=1)
    url = f"sqlite:///{folder / 'catalog.sqlite3'}"
    upgrade(url)
    sessions = make_sessionmaker(url)
    colorizer = load_colorizer(
        None, untrained=True, model=model_name, device="cpu", precision="fp32", size=INPUT_SIZE
    )
    store = LocalStorage()
    runs = [0]

    def run(batch: int) -> float:
        runs[0] += 1
        output = folder / f"out-{runs[0]}"
        names = sorted(path.name for path in source.iterdir())
        ids = queue_folder(sessions, f"run-{runs[0]}", source, names, output, INPUT_SIZE)
        began = time.perf_counter()
        outcomes = process_many(
            ids,
            sessions=sessions,
            storage_for=lambda uri: store,
            colorizer=colorizer,
            worker="bench",
            untrained=True,
            prefetch=2,
            batch=batch,
        )
        seconds = time.perf_counter() - began
        assert all(outcome.status == "done" for outcome in outcomes), outcomes
        return seconds

    return run


def measure(
    name: str, run: Callable[[int], float], images: int, rounds: int, batches: tuple[int, ...]
) -> dict[int, list[float]]:
    """Warm each batch size up once, then time them interleaved; print each run."""
    for batch in batches:
        run(batch)
    rates: dict[int, list[float]] = {batch: [] for batch in batches}
    for round_index in range(rounds):
        turn = round_index % len(batches)
        order = batches[turn:] + batches[:turn]
        for batch in order:
            seconds = run(batch)
            rates[batch].append(images / seconds)
            print(f"  {name} round {round_index + 1} batch {batch}: {images / seconds:.3f} img/s")
    return rates


def report(name: str, rates: dict[int, list[float]]) -> None:
    """Print the mean images per second of each batch size and its ratio to batch 1."""
    base = statistics.mean(next(iter(rates.values())))
    print(f"\n{name}: images/s at {INPUT_SIZE} px, {SCAN_SIZE[0]}x{SCAN_SIZE[1]} scans")
    print(f"| batch | images/s (mean) | min - max | vs batch {next(iter(rates))} |")
    print("|---|---|---|---|")
    for batch, values in rates.items():
        mean = statistics.mean(values)
        print(
            f"| {batch} | {mean:.3f} | {min(values):.3f} - {max(values):.3f} | {mean / base:.2f}x |"
        )


def main() -> None:
    """Parse the options, run the comparisons and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="scans per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--model", choices=("tiny", "large"), default="tiny")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--worker", action="store_true", help="also time process_many (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), fp16 or bf16")
    parser.add_argument(
        "--batch", type=int, action="append", help="a batch size (repeat; default 1, 2, 4)"
    )
    args = parser.parse_args()
    batches = tuple(sorted(set(args.batch))) if args.batch else BATCHES
    if args.threads:
        torch.set_num_threads(args.threads)
    model_name = "ddcolor_paper_tiny" if args.model == "tiny" else "ddcolor_paper"
    scans = synthetic_scans(args.images)
    print(
        f"{args.images} scans, {args.rounds} rounds, {model_name}, {args.device}, "
        f"{args.precision}, "
        f"{torch.get_num_threads()} torch threads on {os.cpu_count()} cores; "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    runner = model_runner(model_name, scans, args.device, args.precision)
    results = {"model": measure("model", runner, args.images, args.rounds, batches)}
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="panchro-batching-") as folder:
            run = worker_runner(model_name, scans, Path(folder))
            results["worker"] = measure("worker", run, args.images, args.rounds, batches)
    for name, rates in results.items():
        report(name, rates)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
