"""Helpers of the tests that compare the colour work on a device with numpy's.

A plain module (no fixtures), so that the GPU tests also run with ``--noconftest`` where
the services' test dependencies are not installed (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import numpy as np
import torch

from ddcolor.colorspace import ColorMath
from ddcolor.pipeline import _compose, network_input
from ddcolor.registry import UPSAMPLE_METHODS
from ddcolor.tensor_colour import DeviceImage

#: Odd, thin, one-pixel and ordinary shapes, grey and RGB.
SHAPES = [(133, 217), (1, 1), (157, 3), (3, 300), (40, 61, 3), (97, 130, 3)]


def math_of(dtype: type) -> ColorMath:
    """The colour arithmetic the pipeline uses for a bit depth."""
    return "opencv" if dtype == np.uint8 else "exact"


def synthetic_scan(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A smooth random scan with sharp edges and noise, so every level range is used."""
    top = np.iinfo(dtype).max
    base = rng.uniform(0, top, (5, 7) + shape[2:])
    cells = (-(-shape[0] // 5), -(-shape[1] // 7)) + (1,) * (len(shape) - 2)
    image = np.kron(base, np.ones(cells))[: shape[0], : shape[1]]
    image = image + rng.normal(0, top / 40, image.shape)
    return np.clip(np.rint(image), 0, top).astype(dtype)


def smooth_ab(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth ab with strong colours, SxSx2 float32."""
    coarse = rng.uniform(-60, 60, (8, 8, 2))
    return np.kron(coarse, np.ones((size // 8, size // 8, 1))).astype(np.float32)


def levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    """Largest difference of two images, in levels of their bit depth."""
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def compare_with_numpy(
    image: np.ndarray, grid: int, device: torch.device, rng: np.random.Generator
) -> dict[str, float]:
    """Run the colour work on a device and in numpy; say how far apart they are.

    Returns:
        ``input``: largest |x - x_numpy| of the network input, ``light``: of its L, and per
        upsampling method the largest difference of the output in levels.
    """
    math = math_of(image.dtype.type)
    ab = smooth_ab(rng, grid)
    x, light = network_input(image, grid, math)
    on_device = DeviceImage(image, device, math)
    x_dev, light_dev = on_device.network_input(grid)
    gaps = {
        "input": float((x_dev.cpu() - x).abs().max()),
        "light": float(np.abs(light_dev.cpu().numpy() - light).max()),
    }
    for method in UPSAMPLE_METHODS:
        expected = _compose(image, ab, light, math, method)
        got = on_device.compose(torch.from_numpy(ab).to(device), light_dev, method)
        assert got.dtype == image.dtype and got.shape == image.shape[:2] + (3,)
        gaps[method] = levels_apart(got, expected)
    return gaps
