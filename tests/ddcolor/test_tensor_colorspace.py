"""Tests of ddcolor.tensor_colorspace: torch's colour conversions against numpy's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddcolor.colorspace import lab_to_rgb, lightness, rgb_to_lab
from ddcolor.tensor_colorspace import grey_lightness, rgb_lightness
from ddcolor.tensor_colorspace import lab_to_rgb as tensor_lab_to_rgb

#: Largest |torch - numpy| of the exact formulas, in RGB units of [0, 1] and in L: both
#: compute in float64 and round to float32 once; the cube root and powers may differ in
#: the last float64 bits.
EXACT_TOLERANCE = 1e-6


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def _random_lab(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    light = rng.uniform(0, 100, shape)
    chroma = rng.uniform(-110, 110, shape + (2,))
    return np.concatenate([light[..., None], chroma], axis=-1).astype(np.float32)


@pytest.mark.parametrize("width", [8, 401, 517])
def test_opencv_lab_to_rgb_equals_numpys_bit_for_bit_including_row_tails(
    rng: np.random.Generator, width: int
) -> None:
    lab = _random_lab(rng, (9, width))
    lab[0, :8, 0] = [0, 1, 7.99, 8, 8.01, 99.99, 100, 2.5]  # both sides of the L <= 8 branch
    got = tensor_lab_to_rgb(torch.from_numpy(lab[..., 0]), torch.from_numpy(lab[..., 1:]), "opencv")
    np.testing.assert_array_equal(got.numpy(), lab_to_rgb(lab, math="opencv"))


def test_exact_lab_to_rgb_is_within_float_rounding_of_numpys(rng: np.random.Generator) -> None:
    lab = _random_lab(rng, (13, 77))
    got = tensor_lab_to_rgb(torch.from_numpy(lab[..., 0]), torch.from_numpy(lab[..., 1:]), "exact")
    np.testing.assert_allclose(got.numpy(), lab_to_rgb(lab, math="exact"), atol=EXACT_TOLERANCE)


def test_opencv_lightness_of_rgb_equals_numpys_bit_for_bit(rng: np.random.Generator) -> None:
    rgb = rng.uniform(-0.2, 1.2, (31, 47, 3)).astype(np.float32)  # clipped like OpenCV
    got = rgb_lightness(torch.from_numpy(rgb), "opencv")
    np.testing.assert_array_equal(got.numpy(), rgb_to_lab(rgb, math="opencv")[..., 0])


def test_exact_lightness_of_rgb_is_within_float_rounding_of_numpys(
    rng: np.random.Generator,
) -> None:
    rgb = rng.random((31, 47, 3), dtype=np.float32)
    rgb[0, :3] = 0.0  # the linear segment near black
    got = rgb_lightness(torch.from_numpy(rgb), "exact")
    expected = rgb_to_lab(rgb, math="exact")[..., 0]
    np.testing.assert_allclose(got.numpy(), expected, atol=EXACT_TOLERANCE * 100)


@pytest.mark.parametrize(("dtype", "math"), [(np.uint8, "opencv"), (np.uint16, "exact")])
def test_grey_lightness_reads_the_same_per_level_table(
    rng: np.random.Generator, dtype: type, math: str
) -> None:
    grey = rng.integers(0, np.iinfo(dtype).max + 1, (17, 23)).astype(dtype)
    levels = torch.from_numpy(grey.astype(np.int32))
    got = grey_lightness(levels, np.dtype(dtype), math)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got.numpy(), lightness(grey, math=math))  # type: ignore[arg-type]


def test_unknown_colour_math_is_refused() -> None:
    with pytest.raises(ValueError, match="colour math"):
        rgb_lightness(torch.zeros(2, 3), "srgb")  # type: ignore[arg-type]
