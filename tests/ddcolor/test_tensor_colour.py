"""Tests of ddcolor.tensor_colour: the colour work on the network's device equals numpy's.

The torch code runs on the CPU device here; tests/ddcolor/test_cuda.py runs it on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from colour_checks import SHAPES, compare_with_numpy, levels_apart, smooth_ab, synthetic_scan
from torch import nn

import ddcolor.tensor_colour as tensor_colour
from ddcolor.pipeline import Colorizer, colorize
from ddcolor.tensor_colour import DeviceImage, resolve_colour_ops

CPU = torch.device("cpu")
#: Side of the network's grid in these tests, in pixels: the colour work takes any size.
GRID = 64


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", SHAPES)
def test_colour_work_on_the_device_is_within_one_level_of_numpys(
    rng: np.random.Generator, dtype: type, shape: tuple[int, ...]
) -> None:
    gaps = compare_with_numpy(synthetic_scan(rng, shape, dtype), GRID, CPU, rng)
    # Measured on the CPU device: all equal, for every shape, bit depth and method.
    assert gaps.pop("input") == 0.0 and gaps.pop("light") == 0.0
    assert max(gaps.values()) <= 1, gaps


def test_compose_in_many_bands_equals_one_band(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = synthetic_scan(rng, (203, 150, 3), np.uint8)
    ab = torch.from_numpy(smooth_ab(rng, GRID))
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
    image = synthetic_scan(rng, (50, 71), dtype)
    results = {
        ops: colorize(_SmoothAb(), image, size=256, colour_ops=ops) for ops in ("numpy", "torch")
    }
    assert levels_apart(results["torch"].image, results["numpy"].image) <= 1


@pytest.mark.parametrize("where", ["__init__", "network_input", "compose"])
def test_out_of_memory_on_the_device_moves_that_colour_work_to_the_host(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    def no_room(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("fake: no room for the scan")

    image = synthetic_scan(rng, (60, 80), np.uint8)
    expected = colorize(_SmoothAb(), image, size=256, colour_ops="numpy").image
    monkeypatch.setattr(DeviceImage, where, no_room)
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
