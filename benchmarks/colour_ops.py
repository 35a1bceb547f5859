"""The colour work around the network: numpy on the host against torch on a device.

For a synthetic scan of ``--megapixels`` (grey 8-bit, RGB 8-bit, grey 16-bit), each round
times both paths of ``ddcolor.pipeline.colorize`` around the network, with the same
smooth random ab on a 512 px grid standing in for the network's output:

- ``numpy``: ``network_input()`` and ``_compose()`` on the host (``colour_ops="numpy"``);
- ``torch``: ``DeviceImage`` on ``--device``: upload, network input, compose, and the copy
  back to the host, waited for (``colour_ops="torch"``).

The two alternate (numpy, torch, numpy, torch...) so that a drift in a shared machine's
speed shows in both; the table gives medians, their ratio and, on a GPU, the peak device
memory of the torch path. The outputs of the two paths are compared too (largest
difference in levels).

Usage::

    python benchmarks/colour_ops.py                       # CPU, 3 MP, 3 rounds
    python benchmarks/colour_ops.py --device cuda:0 --rounds 5 --upsample nearest
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from ddcolor.colorspace import ColorMath
from ddcolor.device import describe_device
from ddcolor.pipeline import _compose, network_input
from ddcolor.registry import DEFAULT_SIZE, DEFAULT_UPSAMPLE, UPSAMPLE_METHODS
from ddcolor.tensor_colour import DeviceImage

#: The scans measured: name, channels, dtype.
CASES = (("grey 8-bit", 1, np.uint8), ("RGB 8-bit", 3, np.uint8), ("grey 16-bit", 1, np.uint16))


def _scan(megapixels: float, channels: int, dtype: type, rng: np.random.Generator) -> np.ndarray:
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    top = np.iinfo(dtype).max
    coarse = rng.uniform(0, top, (12, 16) + ((3,) if channels == 3 else ()))
    cells = (-(-height // 12), -(-width // 16)) + ((1,) if channels == 3 else ())
    image = np.kron(coarse, np.ones(cells))[:height, :width]
    return np.clip(image + rng.normal(0, top / 50, image.shape), 0, top).astype(dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _numpy_path(image: np.ndarray, ab: np.ndarray, math: ColorMath, upsample: str) -> np.ndarray:
    _, light = network_input(image, DEFAULT_SIZE, math)
    return _compose(image, ab, light, math, upsample)  # type: ignore[arg-type]


def _torch_path(
    image: np.ndarray, ab: torch.Tensor, math: ColorMath, upsample: str, device: torch.device
) -> np.ndarray:
    on_device = DeviceImage(image, device, math)
    _, light = on_device.network_input(DEFAULT_SIZE)
    return on_device.compose(ab, light, upsample)  # type: ignore[arg-type]


def main() -> None:
    """Print one row per scan kind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--megapixels", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upsample", default=DEFAULT_UPSAMPLE, choices=UPSAMPLE_METHODS)
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-60, 60, (16, 16, 2))
    ab_host = np.kron(coarse, np.ones((DEFAULT_SIZE // 16, DEFAULT_SIZE // 16, 1)))
    ab_host = ab_host.astype(np.float32)
    ab_device = torch.from_numpy(ab_host).to(device)
    print(
        f"device {describe_device(device)}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"{args.megapixels} MP, upsample {args.upsample}, {args.rounds} rounds"
    )
    header = (
        f"{'scan':<12} {'numpy s':>8} {'torch s':>8} {'numpy/torch':>11} "
        f"{'peak MiB':>8} {'max diff':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, channels, dtype in CASES:
        image = _scan(args.megapixels, channels, dtype, rng)
        math: ColorMath = "opencv" if dtype == np.uint8 else "exact"
        # One pass of each first: tables built, kernels loaded, caches filled.
        expected = _numpy_path(image, ab_host, math, args.upsample)
        got = _torch_path(image, ab_device, math, args.upsample, device)
        diff = int(np.abs(expected.astype(np.int64) - got.astype(np.int64)).max())
        times: dict[str, list[float]] = {"numpy": [], "torch": []}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.rounds):
            began = time.perf_counter()
            _numpy_path(image, ab_host, math, args.upsample)
            times["numpy"].append(time.perf_counter() - began)
            _sync(device)
            began = time.perf_counter()
            _torch_path(image, ab_device, math, args.upsample, device)
            _sync(device)
            times["torch"].append(time.perf_counter() - began)
        numpy_s, torch_s = (statistics.median(times[k]) for k in ("numpy", "torch"))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        print(
            f"{label:<12} {numpy_s:>8.4f} {torch_s:>8.4f} {numpy_s / torch_s:>11.2f} "
            f"{peak:>8.0f} {diff:>8d}",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}; peak MiB: torch path on a GPU")


if __name__ == "__main__":
    main()
