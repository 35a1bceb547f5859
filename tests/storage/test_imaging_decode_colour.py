"""Tests of storage.imaging's decoding of colour originals, alpha, orientation and pages.

Every fixture file is written by a real encoder (Pillow, tifffile, OpenCV) in memory or in
tmp_path, or, for a CMYK profile and an LZW layout they do not write, by hand.
"""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from imaging_samples import cv2_png as _cv2_png
from imaging_samples import lzw_rgb48_tiff as _lzw_rgb48_tiff
from imaging_samples import noise as _noise
from imaging_samples import pillow_bytes as _pillow
from imaging_samples import png_chunk as _chunk
from imaging_samples import tifffile_bytes as _tifffile
from PIL import Image, ImageOps

from storage.codecs.png import write_png
from storage.imaging import decode_image, encode_image
from storage.metadata import srgb_icc


def _cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK profile whose lightness depends on K alone (neutral a*b*)."""

    def padded(data: bytes) -> bytes:
        return data + b"\x00" * (-len(data) % 4)

    text = b"test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    white = b"XYZ " + bytes(4) + struct.pack(">3i", 63190, 65536, 54061)
    clut = b""
    for _c, _m, _y, k in itertools.product((0, 1), repeat=4):
        clut += struct.pack(">3H", 0 if k else 0xFF00, 0x8000, 0x8000)
    identity = struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536)
    ramp = struct.pack(">2H", 0, 65535)
    lut = b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + identity + struct.pack(">2H", 2, 2)
    lut += ramp * 4 + clut + ramp * 3
    tags = [(b"desc", padded(desc)), (b"wtpt", white), (b"A2B0", padded(lut))]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    body = b""
    for signature, data in tags:
        table += signature + struct.pack(">2I", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000)
    header += b"prtrCMYKLab " + bytes(12) + b"acsp" + bytes(24) + bytes(4)
    header += struct.pack(">3i", 63190, 65536, 54061) + bytes(4) + bytes(16) + bytes(28)
    assert len(header) == 128
    return header + table + body


# --- decoding: colour and alpha -----------------------------------------------------------


def test_decode_rgb_scan_of_gray_print_stays_rgb() -> None:
    gray = _noise((10, 12), np.uint8)
    rgb = np.dstack([gray, gray, gray])

    decoded = decode_image(_pillow(Image.fromarray(rgb), "PNG"))

    assert decoded.pixels.shape == (10, 12, 3)
    np.testing.assert_array_equal(decoded.pixels, rgb)


@pytest.mark.parametrize(
    "options",
    [
        {"photometric": "rgb"},
        {"photometric": "rgb", "compression": "zlib", "predictor": True},
        {"photometric": "rgb", "planarconfig": "separate", "byteorder": ">"},
    ],
    ids=["raw", "deflate", "planar-big-endian"],
)
def test_decode_48bit_rgb_tiff_keeps_16_bits(tmp_path: Path, options: dict[str, Any]) -> None:
    rgb = _noise((16, 24, 3))
    planar = options.get("planarconfig") == "separate"
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0) if planar else rgb, **options)

    decoded = decode_image(path.read_bytes(), name="scan.tif")

    assert decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert (decoded.mode, decoded.bit_depth) == ("RGB;16", 16)
    with Image.open(path) as pillow_view:  # what Pillow alone would have given
        assert pillow_view.mode == "RGB"


def test_decode_48bit_lzw_tiff_keeps_16_bits_through_libtiff() -> None:
    rgb = _noise((9, 11, 3))

    decoded = decode_image(_lzw_rgb48_tiff(rgb))

    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert decoded.metadata.compression == "tiff_lzw"


def test_decode_64bit_rgba_tiff_sets_alpha_aside() -> None:
    rgba = _noise((12, 10, 4))

    decoded = decode_image(_tifffile(rgba, photometric="rgb", extrasamples=["unassalpha"]))

    np.testing.assert_array_equal(decoded.pixels, rgba[..., :3])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, rgba[..., 3])
    assert decoded.mode_description == "16-bit RGB with alpha"


@pytest.mark.parametrize("photometric", ["minisblack", "miniswhite"])
def test_decode_16bit_gray_alpha_tiff_sets_alpha_aside(photometric: str) -> None:
    pair = _noise((8, 9, 2))

    decoded = decode_image(_tifffile(pair, photometric=photometric, extrasamples=["unassalpha"]))

    gray = pair[..., 0] if photometric == "minisblack" else 65535 - pair[..., 0]
    np.testing.assert_array_equal(decoded.pixels, gray)
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, pair[..., 1])


@pytest.mark.parametrize("channels", [3, 4])
def test_decode_16bit_colour_png_keeps_16_bits(channels: int) -> None:
    samples = _noise((19, 23, channels))

    decoded = decode_image(_cv2_png(samples))

    np.testing.assert_array_equal(decoded.pixels, samples[..., :3])
    if channels == 4:
        assert decoded.alpha is not None
        np.testing.assert_array_equal(decoded.alpha, samples[..., 3])
    assert decoded.mode == ("RGB;16" if channels == 3 else "RGBA;16")


def test_decode_16bit_gray_alpha_png_keeps_16_bits() -> None:
    pair = _noise((7, 5, 2))

    decoded = decode_image(write_png(pair))

    np.testing.assert_array_equal(decoded.pixels, pair[..., 0])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, pair[..., 1])
    assert decoded.mode == "LA;16"


def test_decode_16bit_rgb_png_colour_key_becomes_alpha() -> None:
    rgb = _noise((6, 6, 3))
    rgb[2, 3] = (1000, 2000, 3000)
    data = write_png(rgb)
    key = _chunk(b"tRNS", struct.pack(">3H", 1000, 2000, 3000))
    idat = data.index(b"IDAT") - 4
    decoded = decode_image(data[:idat] + key + data[idat:])

    assert decoded.alpha is not None
    assert decoded.alpha[2, 3] == 0
    assert int(decoded.alpha.sum()) == 65535 * 35


def test_decode_la_png_sets_alpha_aside() -> None:
    pair = _noise((9, 8, 2), np.uint8)

    decoded = decode_image(_pillow(Image.fromarray(pair), "PNG"))

    np.testing.assert_array_equal(decoded.pixels, pair[..., 0])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, pair[..., 1])


def test_decode_rgba_png_sets_alpha_aside() -> None:
    rgba = _noise((9, 8, 4), np.uint8)

    decoded = decode_image(_pillow(Image.fromarray(rgba), "PNG"))

    np.testing.assert_array_equal(decoded.pixels, rgba[..., :3])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, rgba[..., 3])


def test_decode_palette_with_transparency_gives_rgb_and_alpha() -> None:
    image = Image.new("P", (4, 2))
    image.putpalette([0, 0, 0, 200, 30, 10, 10, 90, 250])
    image.putdata([0, 1, 2, 1, 0, 0, 2, 2])

    decoded = decode_image(_pillow(image, "PNG", transparency=0))

    assert decoded.pixels.shape == (2, 4, 3)
    assert tuple(decoded.pixels[0, 1]) == (200, 30, 10)
    assert decoded.alpha is not None
    assert decoded.alpha.tolist() == [[0, 255, 255, 255], [0, 0, 255, 255]]
    assert decoded.mode == "P"


def test_decode_gray_palette_gives_two_dimensional_gray() -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 128, 128, 128, 250, 250, 250])
    image.putdata([2, 1, 0])

    decoded = decode_image(_pillow(image, "PNG"))

    assert decoded.pixels.tolist() == [[250, 128, 0]]


def test_decode_cmyk_jpeg_without_profile_uses_naive_conversion() -> None:
    cmyk = Image.new("CMYK", (4, 4), (255, 0, 0, 0))

    decoded = decode_image(_pillow(cmyk, "JPEG", quality=100))

    assert np.abs(decoded.pixels.astype(int) - (0, 255, 255)).max() <= 3
    assert decoded.metadata.icc_profile is None
    assert any("naive" in note for note in decoded.notes)


def test_decode_cmyk_jpeg_honours_its_icc_profile() -> None:
    cmyk = Image.new("CMYK", (4, 4), (255, 0, 0, 0))

    decoded = decode_image(_pillow(cmyk, "JPEG", quality=100, icc_profile=_cmyk_profile()))

    # The profile says only K darkens, so pure cyan ink is white paper, not cyan.
    assert decoded.pixels.min() >= 245
    assert decoded.metadata.icc_profile == srgb_icc()


def test_decode_cmyk_with_an_rgb_profile_falls_back_to_naive_conversion() -> None:
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 0, 0))

    decoded = decode_image(_pillow(cmyk, "TIFF", icc_profile=srgb_icc()))

    assert np.abs(decoded.pixels.astype(int) - (255, 0, 255)).max() <= 1
    assert decoded.metadata.icc_profile is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_exif_orientation_like_exif_transpose(orientation: int) -> None:
    rgb = _noise((6, 10, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _pillow(Image.fromarray(rgb), "PNG", exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as original:
        expected = np.asarray(ImageOps.exif_transpose(original))

    decoded = decode_image(data)

    np.testing.assert_array_equal(decoded.pixels, expected)
    assert (decoded.height, decoded.width) == expected.shape[:2]
    assert decoded.metadata.exif is not None
    written = Image.Exif()
    written.load(decoded.metadata.exif)
    assert written[0x0112] == 1


def test_decode_rotated_jpeg_turns_pixels_upright() -> None:
    picture = np.zeros((20, 40), np.uint8)
    picture[:, :8] = 255  # a white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees anticlockwise

    decoded = decode_image(_pillow(Image.fromarray(picture), "JPEG", exif=exif.tobytes()))

    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.pixels[:6].mean() > 240  # the band is now at the top
    assert decoded.pixels[12:].mean() < 15


def test_decode_multipage_tiff_uses_first_page() -> None:
    pages = [Image.fromarray(np.full((5, 6), value, np.uint8)) for value in (10, 20, 30)]
    data = _pillow(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    decoded = decode_image(data)

    assert decoded.pages == 3
    assert int(decoded.pixels.max()) == 10
    assert any("first of 3" in note for note in decoded.notes)


@pytest.mark.parametrize("lossless", [True, False])
def test_decode_webp_records_whether_it_was_lossless(lossless: bool) -> None:
    rgb = _noise((16, 16, 3), np.uint8)

    decoded = decode_image(_pillow(Image.fromarray(rgb), "WEBP", lossless=lossless))

    assert decoded.metadata.lossless is lossless
    assert decoded.pixels.shape == (16, 16, 3)
    if lossless:
        np.testing.assert_array_equal(decoded.pixels, rgb)


def test_decode_bmp_and_jpeg2000_gray() -> None:
    gray = _noise((12, 14), np.uint8)

    bmp = decode_image(_pillow(Image.fromarray(gray), "BMP"))
    jp2 = decode_image(_pillow(Image.fromarray(gray), "JPEG2000", irreversible=False))

    np.testing.assert_array_equal(bmp.pixels, gray)
    np.testing.assert_array_equal(jp2.pixels, gray)
    assert (bmp.format, jp2.format) == ("BMP", "JPEG2000")


def test_decode_16bit_jpeg2000_gray_keeps_every_value_and_becomes_tiff() -> None:
    gray = _noise((20, 24))
    decoded = decode_image(_pillow(Image.fromarray(gray), "JPEG2000", irreversible=False))

    np.testing.assert_array_equal(decoded.pixels, gray)
    out = decode_image(encode_image(np.dstack([decoded.pixels] * 3), source=decoded))
    assert (out.format, out.mode) == ("TIFF", "RGB;16")
    np.testing.assert_array_equal(out.pixels[..., 1], gray)


def test_decoded_arrays_are_read_only() -> None:
    decoded = decode_image(_pillow(Image.fromarray(_noise((4, 4, 4), np.uint8)), "PNG"))

    assert decoded.alpha is not None
    with pytest.raises(ValueError):
        decoded.pixels[0, 0] = 0
    with pytest.raises(ValueError):
        decoded.alpha[0, 0] = 0
