"""Tests of ddcolor.transforms: colour conversions against OpenCV, resizing, ab upsampling."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddcolor.colorspace import ColorMath, lab_to_rgb, lightness, rgb_to_lab, to_unit_float
from ddcolor.registry import UPSAMPLE_METHODS, UpsampleMethod
from ddcolor.transforms import AbUpsampler, resize_bilinear


def upsample_whole(
    ab: np.ndarray,
    shape: tuple[int, int],
    method: UpsampleMethod,
    *,
    guide_small: np.ndarray | None = None,
    guide: np.ndarray | None = None,
) -> np.ndarray:
    """All rows of an upsampler at once."""
    return AbUpsampler(ab, shape, method, guide=guide_small).rows(0, shape[0], guide)


#: Largest |exact - OpenCV| measured on random colours (L, a, b): OpenCV's table interpolation.
EXACT_VS_OPENCV_LAB = (0.25, 0.55, 0.50)
#: Largest |exact - OpenCV| measured for Lab -> RGB in [0, 1]: OpenCV's gamma spline.
EXACT_VS_OPENCV_RGB = 1e-4


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20230101)


def _random_lab(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    light = rng.uniform(0, 100, shape)
    chroma = rng.uniform(-110, 110, shape + (2,))
    return np.concatenate([light[..., None], chroma], axis=-1).astype(np.float32)


def _as_rgb_image(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values.reshape(1, -1, 3).astype(np.float32))


def test_rgb_to_lab_matches_opencv_bit_for_bit(rng: np.random.Generator) -> None:
    images = [
        rng.random((61, 97, 3), dtype=np.float32),
        (rng.integers(0, 256, (40, 33, 3)) / 255.0).astype(np.float32),
        rng.uniform(-0.3, 1.3, (17, 19, 3)).astype(np.float32),  # clipped like OpenCV
        np.repeat(np.linspace(0, 1, 4099, dtype=np.float32)[None, :, None], 3, axis=2),
    ]
    for image in images:
        np.testing.assert_array_equal(rgb_to_lab(image), cv2.cvtColor(image, cv2.COLOR_RGB2Lab))


def test_rgb_to_lab_reproduces_every_node_of_opencvs_table() -> None:
    nodes = np.arange(33, dtype=np.float32) / np.float32(32)
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), axis=-1)
    image = _as_rgb_image(grid)
    np.testing.assert_array_equal(rgb_to_lab(image), cv2.cvtColor(image, cv2.COLOR_RGB2Lab))


@pytest.mark.parametrize("width", [8, 401, 517])
def test_lab_to_rgb_matches_opencv_bit_for_bit_including_row_tails(
    rng: np.random.Generator, width: int
) -> None:
    lab = _random_lab(rng, (23, width))
    np.testing.assert_array_equal(lab_to_rgb(lab), cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))


def test_exact_conversions_stay_within_measured_distance_of_opencv(
    rng: np.random.Generator,
) -> None:
    rgb = rng.random((64, 64, 3), dtype=np.float32)
    distance = np.abs(rgb_to_lab(rgb, math="exact") - cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab))
    assert (distance.max(axis=(0, 1)) <= EXACT_VS_OPENCV_LAB).all()
    lab = _random_lab(rng, (64, 64))
    rgb_distance = np.abs(lab_to_rgb(lab, math="exact") - cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))
    assert rgb_distance.max() <= EXACT_VS_OPENCV_RGB


def test_exact_round_trip_of_greys_is_lossless_at_sixteen_bits() -> None:
    grey = np.linspace(0, 1, 65536, dtype=np.float32)
    rgb = np.repeat(grey[None, :, None], 3, axis=2)
    back = lab_to_rgb(rgb_to_lab(rgb, math="exact"), math="exact")
    assert np.abs(back - rgb).max() * 65535 < 0.05


def test_opencv_lightness_of_greys_takes_only_513_values_but_exact_keeps_all() -> None:
    grey = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert len(np.unique(lightness(grey, math="opencv"))) == 513
    assert len(np.unique(lightness(grey, math="exact"))) == 65536


def test_unknown_colour_math_is_rejected() -> None:
    with pytest.raises(ValueError, match="colour math"):
        rgb_to_lab(np.zeros((2, 2, 3), np.float32), math="fast")  # type: ignore[arg-type]


def test_to_unit_float_divides_like_the_published_pipeline(rng: np.random.Generator) -> None:
    image8 = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_unit_float(image8), (image8 / 255.0).astype(np.float32))
    image16 = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    np.testing.assert_array_equal(to_unit_float(image16), (image16 / 65535.0).astype(np.float32))
    with pytest.raises(TypeError):
        to_unit_float(np.zeros(3, dtype=np.int32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lightness_of_grey_equals_lightness_of_its_rgb(
    rng: np.random.Generator, dtype: type[np.unsignedinteger]
) -> None:
    grey = rng.integers(0, np.iinfo(dtype).max + 1, (300, 41), dtype=dtype)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    math: ColorMath = "opencv" if dtype is np.uint8 else "exact"
    np.testing.assert_array_equal(lightness(grey, math=math), lightness(rgb, math=math))


@pytest.mark.parametrize(("shape", "size"), [((333, 517), (256, 256)), ((100, 60), (512, 512))])
def test_resize_bilinear_matches_opencv_within_one_float32_step_of_one(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]
) -> None:
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    expected = cv2.resize((image / 255.0).astype(np.float32), size[::-1])
    resized = resize_bilinear(image, size)
    assert resized.shape == size + (3,)
    # OpenCV rounds after each pass, this once at the end: results differ in the last bit.
    assert np.abs(resized - expected).max() <= np.spacing(np.float32(1))


def test_resize_bilinear_of_grey_equals_each_channel_of_rgb(rng: np.random.Generator) -> None:
    grey = rng.integers(0, 65536, (77, 131), dtype=np.uint16)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(
        resize_bilinear(grey, (64, 96)), resize_bilinear(rgb, (64, 96))[..., 1]
    )


def _torch_upsample(ab: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    options = {} if mode == "nearest" else {"align_corners": False}
    tensor = torch.from_numpy(ab.transpose(2, 0, 1))[None]
    return F.interpolate(tensor, size=shape, mode=mode, **options)[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("shape", [(333, 517), (512, 512), (1024, 1024), (71, 45), (1, 1)])
def test_nearest_upsampling_is_torch_interpolate_bit_for_bit(
    rng: np.random.Generator, shape: tuple[int, int]
) -> None:
    ab = rng.normal(0, 30, (256, 256, 2)).astype(np.float32)
    np.testing.assert_array_equal(
        upsample_whole(ab, shape, "nearest"), _torch_upsample(ab, shape, "nearest")
    )


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_bilinear_and_bicubic_upsampling_match_torch(
    rng: np.random.Generator, mode: Literal["bilinear", "bicubic"]
) -> None:
    ab = rng.normal(0, 30, (128, 128, 2)).astype(np.float32)
    for shape in [(333, 517), (256, 256), (100, 60)]:
        np.testing.assert_allclose(
            upsample_whole(ab, shape, mode), _torch_upsample(ab, shape, mode), rtol=0, atol=1e-4
        )


def test_guided_upsampling_recovers_colour_edges_that_follow_lightness() -> None:
    # A sharp L edge at a position that falls between the network's grid points, with ab a
    # linear function of L: guided upsampling should recover it, interpolation cannot.
    height, width = 512, 512
    cols = np.arange(width)
    light = np.where(cols < 301, 30.0, 70.0)[None, :].repeat(height, 0).astype(np.float32)
    true_ab = np.stack([light * 0.8 - 20, 25 - light * 0.5], axis=-1).astype(np.float32)
    small_rgb = lab_to_rgb(np.concatenate([light[..., None], 0 * true_ab], -1), math="exact")
    small_l = rgb_to_lab(resize_bilinear(small_rgb, (64, 64)), math="exact")[..., 0]
    small_ab = resize_bilinear(true_ab, (64, 64))
    errors = {}
    for method in ("bilinear", "guided"):
        ab = upsample_whole(small_ab, (height, width), method, guide_small=small_l, guide=light)
        errors[method] = np.abs(ab - true_ab).sum(-1)[:, 290:312].mean()
    assert errors["guided"] < errors["bilinear"] / 2


@pytest.mark.parametrize("method", UPSAMPLE_METHODS)
def test_upsampler_bands_join_into_the_whole_image(rng: np.random.Generator, method: str) -> None:
    ab = rng.normal(0, 20, (64, 64, 2)).astype(np.float32)
    guide_small = rng.uniform(0, 100, (64, 64)).astype(np.float32)
    guide = rng.uniform(0, 100, (301, 203)).astype(np.float32)
    whole = upsample_whole(ab, (301, 203), method, guide_small=guide_small, guide=guide)  # type: ignore[arg-type]
    upsampler = AbUpsampler(ab, (301, 203), method, guide=guide_small)  # type: ignore[arg-type]
    bands = [upsampler.rows(a, min(a + 50, 301), guide[a : a + 50]) for a in range(0, 301, 50)]
    np.testing.assert_array_equal(np.concatenate(bands), whole)


def test_guided_upsampling_needs_its_guides(rng: np.random.Generator) -> None:
    ab = rng.normal(0, 20, (32, 32, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="guide"):
        AbUpsampler(ab, (64, 64), "guided")
    upsampler = AbUpsampler(ab, (64, 64), "guided", guide=np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="guide"):
        upsampler.rows(0, 8)


def test_unknown_upsampling_is_rejected() -> None:
    with pytest.raises(ValueError, match="upsampling"):
        AbUpsampler(np.zeros((8, 8, 2), np.float32), (16, 16), "lanczos")  # type: ignore[arg-type]
