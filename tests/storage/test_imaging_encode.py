"""Tests of storage.imaging's encoding of colorized copies: formats, depths, compression.

Each copy is read back by storage.imaging itself and by an independent reader (Pillow,
tifffile or OpenCV).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import tifffile
from imaging_samples import cv2_png as _cv2_png
from imaging_samples import cv2_read as _cv2_read
from imaging_samples import decode_saved as _decoded
from imaging_samples import lzw_rgb48_tiff as _lzw_rgb48_tiff
from imaging_samples import noise as _noise
from imaging_samples import tifffile_bytes as _tifffile
from numpy.typing import NDArray
from PIL import Image, JpegImagePlugin

from storage.codecs.jpeg import estimate_quality
from storage.imaging import decode_image, encode_image, output_extension, sniff_format

# --- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("TIFF", "TIFF"),
        ("WEBP", "WEBP"),
        ("BMP", "PNG"),
        ("JPEG2000", "TIFF"),
    ],
)
def test_encode_writes_the_original_format_family(source: str, expected: str) -> None:
    decoded = _decoded(source, _noise((8, 8), np.uint8))
    rgb = _noise((8, 8, 3), np.uint8)

    data = encode_image(rgb, source=decoded)

    assert sniff_format(data[:32]) == expected
    assert output_extension(source) == {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif"}.get(
        expected, ".webp"
    )


def test_output_extension_follows_a_requested_format() -> None:
    assert output_extension("TIFF", "jpg") == ".jpg"
    assert output_extension(None) == ".png"
    assert output_extension("bmp") == ".png"
    with pytest.raises(ValueError, match="cannot write BMP"):
        output_extension("TIFF", "bmp")
    with pytest.raises(ValueError, match="unknown image format"):
        output_extension("TIFF", "heic")


@pytest.mark.parametrize("with_alpha", [False, True])
def test_encode_16bit_tiff_round_trips_exactly(with_alpha: bool) -> None:
    rgb = _noise((14, 18, 3))
    alpha = _noise((14, 18)) if with_alpha else None
    source = decode_image(_tifffile(_noise((14, 18)), compression="zlib"))

    data = encode_image(rgb, alpha=alpha, source=source)

    stored = tifffile.imread(io.BytesIO(data))
    expected = rgb if alpha is None else np.dstack([rgb, alpha])
    np.testing.assert_array_equal(stored, expected)
    again = decode_image(data)
    np.testing.assert_array_equal(again.pixels, rgb)
    assert again.metadata.compression == "tiff_adobe_deflate"


@pytest.mark.parametrize("with_alpha", [False, True])
def test_encode_16bit_png_round_trips_exactly(with_alpha: bool) -> None:
    rgb = _noise((15, 13, 3))
    alpha = _noise((15, 13)) if with_alpha else None
    source = decode_image(_cv2_png(_noise((15, 13))))

    data = encode_image(rgb, alpha=alpha, source=source)

    expected = rgb if alpha is None else np.dstack([rgb, alpha])
    np.testing.assert_array_equal(_cv2_read(data), expected)
    again = decode_image(data)
    np.testing.assert_array_equal(again.pixels, rgb)


def test_encode_reattaches_the_source_alpha() -> None:
    rgba = _noise((9, 7, 4), np.uint8)
    source = _decoded("PNG", rgba)
    colour = _noise((9, 7, 3), np.uint8)

    data = encode_image(colour, source=source)

    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(image)[..., 3], rgba[..., 3])


def test_encode_converts_8bit_alpha_to_16bit_samples() -> None:
    rgb = _noise((5, 5, 3))
    alpha = np.full((5, 5), 255, np.uint8)

    data = encode_image(rgb, alpha=alpha, format="png")

    assert int(_cv2_read(data)[..., 3].min()) == 65535


def test_encode_jpeg_is_high_quality_without_chroma_subsampling() -> None:
    source = _decoded("JPEG", _noise((16, 16), np.uint8), quality=70)

    data = encode_image(_noise((16, 16, 3)), source=source)

    with Image.open(io.BytesIO(data)) as image:
        assert isinstance(image, JpegImagePlugin.JpegImageFile)
        assert JpegImagePlugin.get_sampling(image) == 0
        assert estimate_quality(image.quantization) == 95
        assert image.mode == "RGB"


def test_encode_jpeg_of_pure_noise_falls_back_to_baseline() -> None:
    # Optimised 4:4:4 quality-95 noise outgrows Pillow's output buffer ("broken data
    # stream"); such a grainy scan must still get its output, not an unexpected error.
    source = _decoded("JPEG", _noise((16, 16), np.uint8), quality=70)
    rgb = np.random.default_rng(3).integers(0, 256, (300, 300, 3), dtype=np.uint8)

    data = encode_image(rgb, source=source)

    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (300, 300)
        assert estimate_quality(image.quantization) == 95
        decoded = np.asarray(image)
    assert float(np.abs(decoded.astype(float) - rgb).mean()) < 12


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("raw", "raw"),
        ("tiff_lzw", "tiff_lzw"),
        ("tiff_adobe_deflate", "tiff_adobe_deflate"),
        ("packbits", "packbits"),
        ("jpeg", "jpeg"),
    ],
)
def test_encode_8bit_tiff_keeps_the_original_compression(original: str, expected: str) -> None:
    source = _decoded("TIFF", _noise((16, 16, 3), np.uint8), compression=original)

    data = encode_image(_noise((16, 16, 3), np.uint8), source=source)

    assert decode_image(data).metadata.compression == expected


def test_encode_bilevel_tiff_becomes_deflate_colour() -> None:
    source = _decoded("TIFF", np.ones((8, 8), bool), compression="group4")

    data = encode_image(_noise((8, 8, 3), np.uint8), source=source)

    decoded = decode_image(data)
    assert decoded.metadata.compression == "tiff_adobe_deflate"
    assert decoded.pixels.shape == (8, 8, 3)


def test_encode_16bit_lzw_tiff_is_written_losslessly() -> None:
    source = decode_image(_lzw_rgb48_tiff(_noise((4, 5, 3))))
    rgb = _noise((4, 5, 3))

    data = encode_image(rgb, source=source)

    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(data)), rgb)


def test_encode_rounds_16bit_samples_for_8bit_formats() -> None:
    rgb = np.full((4, 4, 3), 257 * 200 + 100, np.uint16)

    data = encode_image(
        rgb, format="webp", source=_decoded("WEBP", rgb[..., 0] >> 8, lossless=True)
    )

    np.testing.assert_array_equal(decode_image(data).pixels, np.full((4, 4, 3), 200))


@pytest.mark.parametrize(
    ("rgb", "alpha", "fmt", "words"),
    [
        (
            np.zeros((4, 4, 3), np.uint8),
            np.zeros((4, 4), np.uint8),
            "jpeg",
            "JPEG cannot store alpha",
        ),
        (np.zeros((4, 4, 3), np.float32), None, "png", "uint8 or uint16"),
        (np.zeros((4, 4, 4), np.uint8), None, "png", "HxWx3"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4), np.uint8), "png", "alpha shape"),
        (np.zeros((4, 4, 3), np.uint8), None, "gif", "unknown image format"),
    ],
)
def test_encode_refuses_what_it_cannot_write(
    rgb: NDArray[Any], alpha: NDArray[Any] | None, fmt: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        encode_image(rgb, alpha=alpha, format=fmt)
