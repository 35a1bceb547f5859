"""Tests of ddcolor.tensor_colour: the colour work on the network's device equals numpy's.

The torch code runs on the CPU device here; tests/ddcolor/test_cuda.py runs it on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ddcolor.tensor_colour as tensor_colour
from ddcolor.colorspace import ColorMath
from ddcolor.pipeline import Colorizer, _compose, colorize, network_input
from ddcolor.registry import UPSAMPLE_METHODS
from ddcolor.tensor_colour import DeviceImage, resolve_colour_ops

CPU = torch.device("cpu")
#: Odd, thin, one-pixel and ordinary shapes, grey and RGB.
SHAPES = [(133, 217), (1, 1), (157, 3), (3, 300), (40, 61, 3), (97, 130, 3)]
#: Side of the network's grid in these tests, in pixels: the colour work takes any size.
GRID = 64


def _math(dtype: type[np.unsignedinteger]) -> ColorMath:
    return "opencv" if dtype == np.uint8 else "exact"


def _scan(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A smooth random scan with sharp edges and noise, so every level range is used."""
    top = np.iinfo(dtype).max
    base = rng.uniform(0, top, (5, 7) + shape[2:])
    cells = (-(-shape[0] // 5), -(-shape[1] // 7)) + (1,) * (len(shape) - 2)
    image = np.kron(base, np.ones(cells))[: shape[0], : shape[1]]
    image = image + rng.normal(0, top / 40, image.shape)
    return np.clip(np.rint(image), 0, top).astype(dtype)


def _ab_grid(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth ab with strong colours, SxSx2 float32."""
    coarse = rng.uniform(-60, 60, (8, 8, 2))
    return np.kron(coarse, np.ones((size // 8, size // 8, 1))).astype(np.float32)


def _levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", SHAPES)
def test_colour_work_on_the_device_is_within_one_level_of_numpys(
    rng: np.random.Generator, dtype: type, shape: tuple[int, ...]
) -> None:
    image, math = _scan(rng, shape, dtype), _math(dtype)
    ab = _ab_grid(rng, GRID)
    x, light = network_input(image, GRID, math)
    on_device = DeviceImage(image, CPU, math)
    x_dev, light_dev = on_device.network_input(GRID)
    np.testing.assert_array_equal(x_dev.numpy(), x.numpy())
    np.testing.assert_array_equal(light_dev.numpy(), light)
    for method in UPSAMPLE_METHODS:
        expected = _compose(image, ab, light, math, method)
        got = on_device.compose(torch.from_numpy(ab), light_dev, method)
        assert got.dtype == image.dtype and got.shape == shape[:2] + (3,)
        # Measured on the CPU device: equal, for every shape, bit depth and method.
        assert _levels_apart(got, expected) <= 1, method


def test_compose_in_many_bands_equals_one_band(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _scan(rng, (203, 150, 3), np.uint8)
    ab = torch.from_numpy(_ab_grid(rng, GRID))
    on_device = DeviceImage(image, CPU, "opencv")
    _, light = on_device.network_input(GRID)
    whole = on_device.compose(ab, light, "guided")
    monkeypatch.setattr(tensor_colour, "DEVICE_BAND_PIXELS", 150 * 40)  # 40 rows a band
    np.testing.assert_array_equal(on_device.compose(ab, light, "guided"), whole)
    x_banded, _ = on_device.network_input(GRID)
    monkeypatch.undo()
    np.testing.assert_array_equal(x_banded.numpy(), on_device.network_input(GRID)[0].numpy())


def test_sixteen_bit_levels_above_the_int16_range_come_back_unchanged() -> None:
    grey = np.array([[0, 1, 32767, 32768, 40000, 65534, 65535]], dtype=np.uint16)
    on_device = DeviceImage(grey, CPU, "exact")
    _, light = on_device.network_input(GRID)
    out = on_device.compose(torch.zeros(GRID, GRID, 2), light, "nearest")
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


class _SmoothAb(nn.Module):
    """ab that follows the input's grey level: different colours for different tones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, :1]
        return torch.cat([grey * 80 - 40, 30 - grey * 60], dim=1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colorize_gives_the_same_image_with_either_colour_ops(
    rng: np.random.Generator, dtype: type
) -> None:
    image = _scan(rng, (50, 71), dtype)
    results = {
        ops: colorize(_SmoothAb(), image, size=256, colour_ops=ops) for ops in ("numpy", "torch")
    }
    assert _levels_apart(results["torch"].image, results["numpy"].image) <= 1


def test_out_of_memory_while_composing_on_the_device_composes_on_the_host(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(*args: object, **kwargs: object) -> np.ndarray:
        raise torch.OutOfMemoryError("fake: no room for the bands")

    image = _scan(rng, (60, 80), np.uint8)
    expected = colorize(_SmoothAb(), image, size=256, colour_ops="numpy").image
    monkeypatch.setattr(DeviceImage, "compose", no_room)
    np.testing.assert_array_equal(
        colorize(_SmoothAb(), image, size=256, colour_ops="torch").image, expected
    )


def test_auto_colour_ops_are_torch_on_a_gpu_and_numpy_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_colour_ops("auto", CPU) == "numpy"
    assert resolve_colour_ops("torch", CPU) == "torch"
    assert resolve_colour_ops("numpy", torch.device("cuda", 0)) == "numpy"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_colour_ops("auto", torch.device("cuda", 0)) == "numpy"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_colour_ops("auto", torch.device("cuda", 0)) == "torch"


def test_unknown_colour_ops_are_refused() -> None:
    with pytest.raises(ValueError, match="colour ops"):
        resolve_colour_ops("cupy", CPU)
    with pytest.raises(ValueError, match="colour ops"):
        Colorizer(_SmoothAb(), colour_ops="opencl")
