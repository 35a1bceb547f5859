"""Tests of storage.imaging: decoding originals and encoding colorized copies.

Every fixture file is written by a real encoder (Pillow, tifffile, OpenCV) in memory or in
tmp_path; OpenCV also serves as an independent reader of 16-bit PNG output.
"""

from __future__ import annotations

import io
import itertools
import struct
import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, TiffImagePlugin

from storage.codecs.jpeg import estimate_quality
from storage.codecs.png import write_png
from storage.codecs.samples import scale_to_16_bits
from storage.errors import InvalidImage, UnsupportedImage
from storage.imaging import (
    DIGITAL_SOURCE_TYPE,
    DecodedImage,
    Provenance,
    decode_image,
    encode_image,
    output_extension,
    sniff_format,
)
from storage.metadata import srgb_icc

PROVENANCE = Provenance(
    software="panchro 0.1.0",
    model="ddcolor_paper",
    checkpoint_sha256="ab" * 32,
    input_size=512,
    created=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
)

RNG = np.random.default_rng(20250304)


def _noise(shape: tuple[int, ...], dtype: type = np.uint16) -> NDArray[Any]:
    """Random samples over the full range, with a smooth band so PNG filters vary."""
    top = np.iinfo(dtype).max
    samples = RNG.integers(0, top, size=shape, endpoint=True, dtype=dtype)
    ramp: NDArray[Any] = np.linspace(0, top, shape[1]).astype(dtype)
    samples[: shape[0] // 2, :] = ramp[np.newaxis, :, np.newaxis] if len(shape) == 3 else ramp
    return samples


def _pillow(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tifffile(samples: NDArray[Any], **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, **options)
    return buffer.getvalue()


def _cv2_png(samples: NDArray[Any]) -> bytes:
    """PNG written by OpenCV (libpng); colour arrays are given in RGB(A) order."""
    if samples.ndim == 3:
        samples = samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    ok, encoded = cv2.imencode(".png", samples)
    assert ok
    return encoded.tobytes()


def _cv2_read(data: bytes) -> NDArray[Any]:
    """Read with OpenCV, unchanged depth and channels, returned in RGB(A) order."""
    samples: NDArray[Any] | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert samples is not None
    if samples.ndim == 3:
        samples = samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    return samples


def _xmp_source_types(packet: bytes) -> list[str]:
    text = packet.decode("utf-8")
    body = text[text.index("<x:xmpmeta") : text.index("</x:xmpmeta>") + 12]
    tag = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
    return [element.text or "" for element in ET.fromstring(body).iter(tag)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _lzw_literals(data: bytes) -> bytes:
    """A valid TIFF LZW stream coding every byte as a literal (clearing before codes widen)."""
    codes: list[int] = []
    for start in range(0, len(data), 250):
        codes.append(256)
        codes.extend(data[start : start + 250])
    codes.append(257)
    bits = "".join(format(code, "09b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _lzw_rgb48_tiff(samples: NDArray[np.uint16]) -> bytes:
    """A little-endian, single-strip, LZW-compressed 48-bit RGB TIFF, written by hand."""
    height, width, _ = samples.shape
    strip = _lzw_literals(samples.astype("<u2").tobytes())
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, 0),  # BitsPerSample: offset filled below
        (259, 3, 1, 5),  # LZW
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, 0),  # StripOffsets: filled below
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = 8 + ifd_size
    strip_offset = bits_offset + 6
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_offset, 273: strip_offset}.get(tag, value)
        field = (
            struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        )
        out += struct.pack("<HHI", tag, kind, count) + field
    return out + b"\x00" * 4 + struct.pack("<3H", 16, 16, 16) + strip


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


# --- decoding: refusals -------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = _pillow(Image.fromarray(_noise((64, 64, 3), np.uint8)), "JPEG")
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(_pillow(Image.fromarray(_noise((32, 32), np.uint8)), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(40)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"%PDF-1.7\n1 0 obj\n", "PDF document"),
        (b"Dear archivist, here are the scans.", "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated or corrupt"),
        (_truncated_jpeg(), "truncated"),
        (_corrupt_png(), "corrupt"),
    ],
    ids=["empty", "pdf", "text", "png-header-only", "truncated-jpeg", "corrupt-png"],
)
def test_decode_refuses_bad_bytes_with_a_helpful_message(data: bytes, words: str) -> None:
    with pytest.raises(InvalidImage) as raised:
        decode_image(data, name="box7/scan-0042")

    message = str(raised.value)
    assert message.startswith("box7/scan-0042: ")
    assert words in message
    assert type(raised.value) is InvalidImage


def test_decode_refuses_gif_as_unsupported() -> None:
    data = _pillow(Image.new("L", (4, 4)), "GIF")

    with pytest.raises(UnsupportedImage, match="GIF"):
        decode_image(data)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_decode_refuses_floating_point_tiff(dtype: type) -> None:
    with pytest.raises(UnsupportedImage, match="floating-point"):
        decode_image(_tifffile(np.zeros((4, 4), dtype)))


def test_decode_refuses_image_over_the_pixel_limit_before_decoding() -> None:
    # A 40000x40000 header over a few bytes of data: inflating it would take 1.6 GB.
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    data += _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b"")

    with pytest.raises(InvalidImage, match="1600 megapixels"):
        decode_image(data)


def test_decode_applies_a_lower_pixel_limit_to_wide_tiffs() -> None:
    data = _tifffile(_noise((20, 20, 3)), photometric="rgb")

    with pytest.raises(InvalidImage, match="over the limit"):
        decode_image(data, max_pixels=399)


def test_decode_accepts_a_100_megapixel_scan() -> None:
    data = _pillow(Image.new("1", (10_000, 10_000)), "PNG")

    decoded = decode_image(data)

    assert decoded.pixels.shape == (10_000, 10_000)


# --- encoding -----------------------------------------------------------------------------


def _decoded(fmt: str, samples: NDArray[Any], **options: Any) -> DecodedImage:
    return decode_image(_pillow(Image.fromarray(samples), fmt, **options))


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


WRITERS = [
    ("JPEG", np.uint8, {}),
    ("PNG", np.uint8, {}),
    ("PNG", np.uint16, {}),
    ("TIFF", np.uint8, {"compression": "tiff_lzw"}),
    ("TIFF", np.uint16, {"compression": "zlib"}),
    ("WEBP", np.uint8, {"lossless": True}),
]


def _source_with_metadata(fmt: str, dtype: type, options: dict[str, Any]) -> DecodedImage:
    icc = srgb_icc()
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"
    exif[0x8298] = "Public domain"
    picture = _noise((12, 10, 3), dtype)
    if dtype == np.uint16:
        if fmt == "TIFF":
            data = _tifffile(
                picture,
                photometric="rgb",
                iccprofile=icc,
                resolution=(300, 300),
                resolutionunit="inch",
                extratags=[
                    (315, "s", 0, "A. Photographer", True),
                    (33432, "s", 0, "Public domain", True),
                ],
                **options,
            )
        else:
            data = write_png(picture, icc_profile=icc, dpi=(300, 300), exif=exif.tobytes())
        return decode_image(data)
    return decode_image(
        _pillow(
            Image.fromarray(picture),
            fmt,
            icc_profile=icc,
            dpi=(300, 300),
            exif=exif.tobytes(),
            **options,
        )
    )


@pytest.mark.parametrize(("fmt", "dtype", "options"), WRITERS)
def test_encode_carries_icc_dpi_exif_and_writes_provenance_xmp(
    fmt: str, dtype: type, options: dict[str, Any]
) -> None:
    source = _source_with_metadata(fmt, dtype, options)

    data = encode_image(_noise((12, 10, 3), dtype), source=source, provenance=PROVENANCE)

    out = decode_image(data)
    assert out.format == fmt
    assert out.pixels.dtype == (dtype if fmt in ("PNG", "TIFF") else np.uint8)
    assert out.metadata.icc_profile == srgb_icc()
    if fmt != "WEBP":  # WebP has no resolution field
        assert out.metadata.dpi == pytest.approx((300.0, 300.0), abs=0.01)
    assert out.metadata.exif is not None
    assert b"A. Photographer" in out.metadata.exif
    assert out.metadata.xmp is not None
    assert _xmp_source_types(out.metadata.xmp) == [DIGITAL_SOURCE_TYPE]


@pytest.mark.parametrize(("fmt", "dtype", "options"), [w for w in WRITERS if w[0] != "WEBP"])
def test_encode_writes_a_plain_text_provenance_note(
    fmt: str, dtype: type, options: dict[str, Any]
) -> None:
    # WebP has no plain text field; its XMP carries the record (tested above).
    source = _source_with_metadata(fmt, dtype, options)

    data = encode_image(_noise((12, 10, 3), dtype), source=source, provenance=PROVENANCE)

    with Image.open(io.BytesIO(data)) as image:
        if fmt == "JPEG":
            note = image.info["comment"].decode()
        elif fmt == "PNG":
            note = image.info["Description"]
            assert image.info["Software"] == "panchro 0.1.0"
        else:
            assert isinstance(image, TiffImagePlugin.TiffImageFile)
            note = image.tag_v2[270]
            assert image.tag_v2[305] == "panchro 0.1.0"
    assert "ddcolor_paper" in note
    assert "trained model" in note


def test_encode_replaces_a_gray_profile_with_srgb_for_colour() -> None:
    gray_icc = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    gray_icc = gray_icc[:16] + b"GRAY" + gray_icc[20:]
    source = _decoded("PNG", _noise((6, 6), np.uint8), icc_profile=gray_icc)
    assert source.metadata.icc_profile == gray_icc

    colour = decode_image(encode_image(_noise((6, 6, 3), np.uint8), source=source))
    gray = decode_image(encode_image(_noise((6, 6), np.uint8), source=source))

    assert colour.metadata.icc_profile == srgb_icc()
    assert gray.metadata.icc_profile == gray_icc


def test_encode_without_provenance_keeps_the_original_xmp() -> None:
    packet = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
        b'elements/1.1/" dc:format="image/png"/></rdf:RDF></x:xmpmeta>'
    )
    source = decode_image(
        write_png(_noise((4, 4), np.uint8), text={"XML:com.adobe.xmp": packet.decode()})
    )

    out = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source))

    assert out.metadata.xmp is not None
    assert b'dc:format="image/png"' in out.metadata.xmp
    assert _xmp_source_types(out.metadata.xmp) == []


def test_encode_jpeg_leaves_out_an_original_xmp_too_large_for_one_segment() -> None:
    huge = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
        f'elements/1.1/" dc:source="{"x" * 70_000}"/></rdf:RDF></x:xmpmeta>'
    )
    source = decode_image(write_png(_noise((4, 4), np.uint8), text={"XML:com.adobe.xmp": huge}))

    png = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source))
    out = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source, format="jpg"))
    with_record = decode_image(
        encode_image(
            _noise((4, 4, 3), np.uint8), source=source, format="jpg", provenance=PROVENANCE
        )
    )

    assert png.metadata.xmp is not None and len(png.metadata.xmp) > 70_000
    assert out.metadata.xmp is None
    assert with_record.metadata.xmp is not None
    assert len(with_record.metadata.xmp) < 65_504
    assert _xmp_source_types(with_record.metadata.xmp) == [DIGITAL_SOURCE_TYPE]


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


# --- the PNG writer -----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_png_is_read_back_exactly_by_opencv(channels: int, dtype: type) -> None:
    shape = (70, 33) if channels == 1 else (70, 33, channels)
    samples = _noise(shape, dtype)

    data = write_png(samples)

    stored = _cv2_read(data)
    if channels == 2:  # OpenCV expands gray+alpha to BGRA
        stored = stored[..., [0, 3]]
    np.testing.assert_array_equal(stored, samples)


def test_write_png_uses_every_filter_type_on_varied_content() -> None:
    samples = _noise((120, 64, 3))
    samples[60:90] = 1000
    samples[90:] = np.linspace(0, 60000, 120 * 64 * 3).reshape(30 * 4, 64, 3)[:30]

    data = write_png(samples, compress_level=0)

    # With level 0 the zlib stream stores rows verbatim, so each row's filter byte is visible.
    raw = zlib.decompress(b"".join(_chunks(data, b"IDAT")))
    row_size = 1 + 64 * 6
    filters = {raw[row * row_size] for row in range(120)}
    assert filters <= {0, 1, 2, 3, 4}
    assert len(filters) >= 3
    np.testing.assert_array_equal(_cv2_read(data), samples)


def _chunks(data: bytes, kind: bytes) -> list[bytes]:
    found, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == kind:
            found.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    return found


def test_write_png_metadata_chunks_are_read_by_pillow() -> None:
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"

    data = write_png(
        _noise((5, 6, 3)),
        icc_profile=srgb_icc(),
        dpi=(300, 300),
        exif=exif.tobytes(),
        text={"Software": "panchro", "Title": "Łódź, 1931", "XML:com.adobe.xmp": "<x/>"},
    )

    with Image.open(io.BytesIO(data)) as image:
        assert image.info["icc_profile"] == srgb_icc()
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert image.getexif()[0x013B] == "A. Photographer"
        assert image.info["Software"] == "panchro"
        assert image.info["Title"] == "Łódź, 1931"
        assert image.info["xmp"] == b"<x/>"
    assert [kind for kind in (b"tEXt", b"iTXt") if _chunks(data, kind)] == [b"tEXt", b"iTXt"]
