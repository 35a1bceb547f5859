"""Tests of ddcolor.composing and the plane-wise colour conversions it runs on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import ddcolor.colorspace
from ddcolor.colorspace import (
    ColorMath,
    _opencv_lab_of_fixed,
    lab_planes_to_rgb,
    lab_to_rgb,
    lightness,
    rgb_to_lab,
)
from ddcolor.composing import compose
from ddcolor.registry import UPSAMPLE_METHODS, UpsampleMethod
from ddcolor.transforms import AbUpsampler


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def _whole_image_reference(
    image: np.ndarray, ab: np.ndarray, guide: np.ndarray, math: ColorMath, method: UpsampleMethod
) -> np.ndarray:
    """The composition in one piece, through the interleaved (HxWx3) conversions."""
    light = lightness(image, math=math)
    upsampled = AbUpsampler(ab, image.shape[:2], method, guide=guide).rows(0, image.shape[0], light)
    rgb = lab_to_rgb(np.concatenate([light[..., None], upsampled], axis=2), math=math)
    out = np.rint(rgb * np.float32(np.iinfo(image.dtype).max)).astype(image.dtype)
    return out


@pytest.mark.parametrize("method", UPSAMPLE_METHODS)
@pytest.mark.parametrize("kind", ["grey8", "rgb8", "grey16"])
def test_compose_in_bands_and_threads_equals_the_whole_image_reference(
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    method: UpsampleMethod,
    kind: str,
) -> None:
    height, width = 61, 45  # width % 8 = 5: OpenCV's scalar tail in every row
    if kind == "grey16":
        image: np.ndarray = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    else:
        shape = (height, width) if kind == "grey8" else (height, width, 3)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    math: ColorMath = "exact" if kind == "grey16" else "opencv"
    ab = rng.normal(0, 30, (16, 16, 2)).astype(np.float32)
    guide = rng.uniform(0, 100, (16, 16)).astype(np.float32)
    expected = _whole_image_reference(image, ab, guide, math, method)
    monkeypatch.setattr(ddcolor.colorspace, "BAND_PIXELS", 7 * width)  # nine bands
    for threads in (1, 3):
        got = compose(image, ab, guide, math, method, threads=threads)
        np.testing.assert_array_equal(got, expected)


def test_planes_of_the_upsampler_are_its_rows(rng: np.random.Generator) -> None:
    ab = rng.normal(0, 20, (16, 16, 2)).astype(np.float32)
    guide_small = rng.uniform(0, 100, (16, 16)).astype(np.float32)
    guide = rng.uniform(0, 100, (10, 37)).astype(np.float32)
    upsampler = AbUpsampler(ab, (40, 37), "guided", guide=guide_small)
    a, b = upsampler.planes(5, 15, guide)
    np.testing.assert_array_equal(np.stack([a, b], -1), upsampler.rows(5, 15, guide))


@pytest.mark.parametrize("width", [8, 13, 3])
def test_lab_planes_match_opencv_bit_for_bit_including_row_tails(
    rng: np.random.Generator, width: int
) -> None:
    lab = np.concatenate(
        [rng.uniform(0, 100, (9, width, 1)), rng.uniform(-110, 110, (9, width, 2))], axis=2
    ).astype(np.float32)
    planes = lab_planes_to_rgb(lab[..., 0], lab[..., 1], lab[..., 2])
    np.testing.assert_array_equal(np.stack(planes, -1), cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))


def test_lab_of_grey_pixels_comes_from_the_grey_table_and_matches_opencv(
    rng: np.random.Generator,
) -> None:
    grey = rng.uniform(-0.1, 1.1, (17, 23)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(rgb_to_lab(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab))
    fixed = np.rint(np.clip(rgb, 0, 1) * 16384).astype(np.int32)
    np.testing.assert_array_equal(rgb_to_lab(rgb), _opencv_lab_of_fixed(fixed))


def test_unknown_colour_math_is_rejected_by_the_plane_conversion() -> None:
    zeros = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="colour math"):
        lab_planes_to_rgb(zeros, zeros, zeros, math="srgb")  # type: ignore[arg-type]
