"""Tests of storage.imaging's decoding: format sniffing, grayscale originals, metadata.

Every fixture file is written by a real encoder (Pillow, tifffile, OpenCV) in memory.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from imaging_samples import RNG
from imaging_samples import cv2_png as _cv2_png
from imaging_samples import noise as _noise
from imaging_samples import pillow_bytes as _pillow
from imaging_samples import tifffile_bytes as _tifffile
from PIL import Image, JpegImagePlugin, TiffImagePlugin

from storage.codecs.jpeg import estimate_quality
from storage.codecs.samples import scale_to_16_bits
from storage.imaging import decode_image, sniff_format
from storage.metadata import srgb_icc

# --- sniff_format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "expected"),
    [
        ("JPEG", {}, "JPEG"),
        ("PNG", {}, "PNG"),
        ("TIFF", {}, "TIFF"),
        ("WEBP", {}, "WEBP"),
        ("BMP", {}, "BMP"),
        ("JPEG2000", {}, "JPEG2000"),
        ("JPEG2000", {"no_jp2": True}, "JPEG2000"),
    ],
)
def test_sniff_format_recognises_files_written_by_pillow(
    fmt: str, options: dict[str, Any], expected: str
) -> None:
    data = _pillow(Image.new("RGB", (8, 8)), fmt, **options)

    assert sniff_format(data[:32]) == expected


@pytest.mark.parametrize(("byteorder", "bigtiff"), [("<", False), (">", False), ("<", True)])
def test_sniff_format_recognises_tiff_byte_orders_and_bigtiff(
    byteorder: str, bigtiff: bool
) -> None:
    data = _tifffile(np.zeros((4, 4), np.uint8), byteorder=byteorder, bigtiff=bigtiff)

    assert sniff_format(data[:32]) == "TIFF"


@pytest.mark.parametrize(
    "head",
    [b"", b"GIF89a....", b"%PDF-1.7\n", b"BMW service record, 1998\n........", b"RIFF\0\0\0\0WAVE"],
)
def test_sniff_format_returns_none_for_other_files(head: bytes) -> None:
    assert sniff_format(head) is None


# --- decoding: gray -----------------------------------------------------------------------


def test_decode_8bit_gray_png_stays_two_dimensional() -> None:
    gray = _noise((20, 30), np.uint8)

    decoded = decode_image(_pillow(Image.fromarray(gray), "PNG"))

    assert decoded.pixels.shape == (20, 30)
    assert decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, gray)
    assert (decoded.mode, decoded.bit_depth, decoded.format) == ("L", 8, "PNG")
    assert decoded.is_grayscale
    assert decoded.mode_description == "8-bit grayscale"


def test_decode_16bit_gray_png_keeps_every_value() -> None:
    gray = _noise((20, 30))

    decoded = decode_image(_cv2_png(gray))

    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, gray)
    assert decoded.bit_depth == 16


@pytest.mark.parametrize(
    "write",
    [
        lambda a: _tifffile(a, byteorder=">"),
        lambda a: _tifffile(a, byteorder="<", compression="zlib", predictor=True),
        lambda a: _pillow(Image.fromarray(a), "TIFF", compression="tiff_lzw"),
    ],
    ids=["big-endian", "deflate-predictor", "lzw"],
)
def test_decode_16bit_gray_tiff_keeps_every_value(write: Any) -> None:
    gray = _noise((24, 17))

    decoded = decode_image(write(gray))

    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, gray)


def test_decode_32bit_unsigned_tiff_scales_to_16_bits() -> None:
    wide = np.array([[0, 2**32 - 1], [2**31, 65536]], dtype=np.uint32)

    decoded = decode_image(_tifffile(wide))

    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, [[0, 65535], [32768, 1]])
    assert decoded.bit_depth == 32


def test_scale_to_16_bits_maps_full_range_of_any_depth() -> None:
    twelve = np.array([0, 1, 2048, 4095], dtype=np.uint16)

    np.testing.assert_array_equal(scale_to_16_bits(twelve, 12), [0, 16, 32776, 65535])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_decode_1bit_bilevel_gives_black_and_white_8bit(fmt: str) -> None:
    bits = RNG.integers(0, 2, size=(13, 21)).astype(bool)
    options = {"compression": "group4"} if fmt == "TIFF" else {}

    decoded = decode_image(_pillow(Image.fromarray(bits), fmt, **options))

    np.testing.assert_array_equal(decoded.pixels, np.where(bits, 255, 0))
    assert (decoded.mode, decoded.bit_depth) == ("1", 1)


# --- decoding: metadata -------------------------------------------------------------------


def test_decode_reads_icc_dpi_exif_and_jpeg_quality() -> None:
    icc = srgb_icc()
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"
    data = _pillow(
        Image.fromarray(_noise((8, 8, 3), np.uint8)),
        "JPEG",
        quality=83,
        icc_profile=icc,
        dpi=(600, 600),
        exif=exif.tobytes(),
    )

    metadata = decode_image(data).metadata

    assert metadata.icc_profile == icc
    assert metadata.dpi == (600.0, 600.0)
    assert metadata.exif is not None and b"A. Photographer" in metadata.exif
    assert metadata.jpeg_quality == 83


@pytest.mark.parametrize("quality", [10, 50, 75, 90, 95, 100])
def test_estimate_quality_recovers_ijg_quality(quality: int) -> None:
    data = _pillow(Image.new("L", (8, 8)), "JPEG", quality=quality)

    with Image.open(io.BytesIO(data)) as image:
        assert isinstance(image, JpegImagePlugin.JpegImageFile)
        assert estimate_quality(image.quantization) == quality


def test_decode_reads_tiff_compression_description_and_xmp() -> None:
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[270] = "Harbour, 1923"
    tags[700] = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
    data = _pillow(
        Image.fromarray(_noise((8, 8), np.uint8)), "TIFF", compression="packbits", tiffinfo=tags
    )

    metadata = decode_image(data).metadata

    assert metadata.compression == "packbits"
    assert metadata.description == "Harbour, 1923"
    assert metadata.xmp == b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"


def test_decode_reads_resolution_of_a_wide_tiff_in_centimetres() -> None:
    data = _tifffile(
        _noise((4, 4, 3)), photometric="rgb", resolution=(100, 100), resolutionunit="centimeter"
    )

    assert decode_image(data).metadata.dpi == pytest.approx((254.0, 254.0))
