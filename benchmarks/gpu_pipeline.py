"""One image through ``colorize()`` on a GPU: colour work on the device or on the host.

Three tables, for the network with random weights (speed and memory do not depend on their
values) on ``--device``:

1. per precision (fp16, bf16, fp32) and colour work (``torch`` on the device, ``numpy``
   on the host): seconds per image end to end (``Colorizer.colorize`` on a decoded scan,
   from the array to the RGB array on the host), images per second, the network's share,
   peak device memory, and how far ab and the output move from fp32 (largest difference
   of ab, in ab units, and of the output, in levels);
2. peak device memory and seconds by the network's input size (``--precision`` first);
3. peak device memory and seconds by scan size, colour work on the device.

Usage::

    python benchmarks/gpu_pipeline.py --device cuda:0
    python benchmarks/gpu_pipeline.py --device cuda:0 --model ddcolor_paper_tiny --images 3

Runs on the CPU too, slowly: ``--device cpu --model ddcolor_paper_tiny --images 1
--precisions fp32 --precision fp32 --sizes 256 --scan-mp 0.3``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from ddcolor.device import describe_device
from ddcolor.pipeline import Colorizer, load_colorizer, network_input
from ddcolor.registry import PRECISIONS

#: Megapixels of the scans of table 3; table 1 uses the first.
SCAN_SIZES_MP = (3.0, 12.0, 48.0)
#: Network input sizes of table 2, in pixels.
INPUT_SIZES = (512, 1024, 2048)


def _scan(megapixels: float, rng: np.random.Generator) -> np.ndarray:
    """A grey 8-bit scan of 4:3 shape: smooth tones, edges and grain."""
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    coarse = rng.uniform(0, 255, (12, 16))
    image = np.kron(coarse, np.ones((-(-height // 12), -(-width // 16))))[:height, :width]
    return np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _time(
    colorizer: Colorizer, image: np.ndarray, images: int, **kwargs: object
) -> dict[str, float]:
    """Median seconds per image and network seconds after one warm-up, and the peak memory."""
    colorizer.colorize(image, **kwargs)  # type: ignore[arg-type]
    _reset(colorizer.device)
    total, network = [], []
    for _ in range(images):
        result = colorizer.colorize(image, **kwargs)  # type: ignore[arg-type]
        total.append(result.seconds)
        network.append(result.network_seconds)
    return {
        "seconds": statistics.median(total),
        "network": statistics.median(network),
        "peak": _peak_mib(colorizer.device),
    }


def _ab(colorizer: Colorizer, image: np.ndarray, precision: str) -> torch.Tensor:
    x, _ = network_input(image, colorizer.size, "opencv")
    ab, _ = colorizer.runner.predict(x.to(colorizer.device), precision)
    return ab.float().cpu()


def _precision_table(
    colorizer: Colorizer, image: np.ndarray, images: int, precisions: list[str]
) -> None:
    print(f"\n1. one {image.shape[1]}x{image.shape[0]} grey 8-bit scan at {colorizer.size} px")
    header = (
        f"{'precision':<9} {'colour':<6} {'s/image':>8} {'images/s':>8} {'network s':>9} "
        f"{'peak MiB':>8} {'ab vs fp32':>10} {'levels vs fp32':>14}"
    )
    print(header)
    print("-" * len(header))
    reference_ab = _ab(colorizer, image, "fp32")
    colorizer.colour_ops = "torch"
    reference = colorizer.colorize(image, precision="fp32").image.astype(np.int64)
    for precision in precisions:
        try:
            ab_gap = float((_ab(colorizer, image, precision) - reference_ab).abs().max())
        except Exception as exc:  # a precision the device lacks: say so, go on
            print(f"{precision:<9} {'-':<6} unavailable: {exc}")
            continue
        for ops in ("torch", "numpy"):
            colorizer.colour_ops = ops
            cell = _time(colorizer, image, images, precision=precision)
            out = colorizer.colorize(image, precision=precision).image.astype(np.int64)
            levels = int(np.abs(out - reference).max())
            print(
                f"{precision:<9} {ops:<6} {cell['seconds']:>8.4f} {1 / cell['seconds']:>8.1f} "
                f"{cell['network']:>9.4f} {cell['peak']:>8.0f} {ab_gap:>10.3f} {levels:>14d}",
                flush=True,
            )
    colorizer.colour_ops = "auto"


def _size_table(
    colorizer: Colorizer, image: np.ndarray, precision: str, images: int, sizes: list[int]
) -> None:
    print(f"\n2. by input size, {precision}, colour work on the device")
    header = f"{'size':>5} {'s/image':>8} {'network s':>9} {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        cell = _time(colorizer, image, images, size=size, precision=precision)
        print(
            f"{size:>5} {cell['seconds']:>8.4f} {cell['network']:>9.4f} {cell['peak']:>8.0f}",
            flush=True,
        )


def _scan_table(colorizer: Colorizer, precision: str, images: int, scans: list[float]) -> None:
    print(f"\n3. by scan size, {precision} at {colorizer.size} px, colour work on the device")
    header = f"{'MP':>5} {'s/image':>8} {'network s':>9} {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for megapixels in scans:
        image = _scan(megapixels, np.random.default_rng(1))
        cell = _time(colorizer, image, images, precision=precision)
        print(
            f"{megapixels:>5.1f} {cell['seconds']:>8.4f} {cell['network']:>9.4f} "
            f"{cell['peak']:>8.0f}",
            flush=True,
        )


def main() -> None:
    """Print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--model", default="ddcolor_modelscope", help="registry name")
    parser.add_argument("--images", type=int, default=5, help="timed images per cell")
    parser.add_argument("--precision", default="fp16", help="precision of tables 2 and 3")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(INPUT_SIZES))
    parser.add_argument("--scan-mp", nargs="+", type=float, default=list(SCAN_SIZES_MP))
    args = parser.parse_args()
    began = time.perf_counter()
    colorizer = load_colorizer(None, untrained=True, model=args.model, device=args.device)
    print(
        f"{args.model} (random weights) on {describe_device(colorizer.device)}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"loaded in {time.perf_counter() - began:.1f} s"
    )
    image = _scan(args.scan_mp[0], np.random.default_rng(0))
    _precision_table(colorizer, image, args.images, args.precisions)
    colorizer.colour_ops = "torch"
    _size_table(colorizer, image, args.precision, args.images, args.sizes)
    _scan_table(colorizer, args.precision, max(1, args.images // 2), args.scan_mp)
    print(f"\ndone in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
