"""storage.chroma: originals in colour told apart from grey stored as RGB, noise and toning."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from storage.chroma import read_chroma

HEIGHT, WIDTH = 96, 128


def _grey() -> NDArray[np.uint8]:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    grey = (x * 255 // WIDTH + 50 * np.sin(y / 6.0)).clip(0, 255).astype(np.uint8)
    grey[HEIGHT // 3 : HEIGHT // 2, WIDTH // 4 : WIDTH // 2] = 15  # hard edges for JPEG
    return np.dstack([grey] * 3)


def _jpeg(rgb: NDArray[np.uint8], quality: int = 75) -> NDArray[np.uint8]:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _noisy(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    noise = np.random.default_rng(7).normal(0, 6, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def _sepia(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    grey = rgb[..., :1].astype(float)
    midtones = grey * (255 - grey) / 255**2 * 4
    return np.clip(grey + midtones * np.array([40, 12, -30]), 0, 255).astype(np.uint8)


def _scene(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    scene = rgb.astype(float)
    scene[: HEIGHT // 3] = [90, 140, 220]  # sky
    scene[HEIGHT // 3 : 2 * HEIGHT // 3, : WIDTH // 2] = [60, 130, 50]  # foliage
    scene[2 * HEIGHT // 3 :, WIDTH // 3 :] = [220, 170, 140]  # skin
    return (scene * 0.5 + rgb * 0.5).astype(np.uint8)


NOT_COLOUR = {
    "grey as RGB": _grey,
    "grey as RGB, JPEG 4:2:0": lambda: _jpeg(_grey()),
    "grey with sensor noise": lambda: _noisy(_grey()),
    "noisy grey, JPEG": lambda: _jpeg(_noisy(_grey()), 60),
    "sepia toned": lambda: _sepia(_grey()),
    "sepia toned, JPEG": lambda: _jpeg(_sepia(_grey())),
}


@pytest.mark.parametrize("name", NOT_COLOUR)
def test_grey_noise_jpeg_and_toned_prints_are_not_colour(name: str) -> None:
    reading = read_chroma(NOT_COLOUR[name]())
    assert not reading.in_colour, reading
    assert reading.toned == name.startswith("sepia")


@pytest.mark.parametrize(
    "pixels",
    [_scene(_grey()), _jpeg(_scene(_grey())), _scene(_grey()).astype(np.uint16) * 257],
    ids=["8-bit", "JPEG", "16-bit"],
)
def test_a_photograph_in_colour_is_colour(pixels: NDArray[Any]) -> None:
    reading = read_chroma(pixels)
    assert reading.in_colour and reading.coloured_share > 0.3


def test_gray_pixels_and_a_large_image_are_read_quickly() -> None:
    assert read_chroma(_grey()[..., 0]).coloured_share == 0
    large = np.zeros((800, 2100, 3), np.uint8)  # read with a stride of 2
    large[:400] = [30, 120, 200]
    large[400:, :1000] = [200, 60, 40]
    assert read_chroma(large).in_colour
