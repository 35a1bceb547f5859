"""Tests of storage.imaging's refusals: bad bytes, unsupported kinds, oversized images.

Damaged files are cut from files a real encoder (Pillow, tifffile) wrote in memory.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from imaging_samples import noise as _noise
from imaging_samples import pillow_bytes as _pillow
from imaging_samples import png_chunk as _chunk
from imaging_samples import tifffile_bytes as _tifffile
from PIL import Image

from storage.errors import InvalidImage, UnsupportedImage
from storage.imaging import decode_image

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
    ("data", "words", "code"),
    [
        (b"", "empty", "decode.truncated"),
        (b"%PDF-1.7\n1 0 obj\n", "PDF document", "decode.not_image"),
        (
            b"Dear archivist, here are the scans.",
            "not a recognised image format",
            "decode.not_image",
        ),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated or corrupt", "decode.corrupt"),
        (_truncated_jpeg(), "truncated", "decode.truncated"),
        (_corrupt_png(), "corrupt", "decode.corrupt"),
    ],
    ids=["empty", "pdf", "text", "png-header-only", "truncated-jpeg", "corrupt-png"],
)
def test_decode_refuses_bad_bytes_with_a_helpful_message(
    data: bytes, words: str, code: str
) -> None:
    with pytest.raises(InvalidImage) as raised:
        decode_image(data, name="box7/scan-0042")

    message = str(raised.value)
    assert message.startswith("box7/scan-0042: ")
    assert words in message
    assert not isinstance(raised.value, UnsupportedImage)
    assert raised.value.code == code


def test_decode_refuses_gif_as_unsupported() -> None:
    data = _pillow(Image.new("L", (4, 4)), "GIF")

    with pytest.raises(UnsupportedImage, match="GIF") as raised:
        decode_image(data)
    assert raised.value.code == "decode.unsupported"


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_decode_refuses_floating_point_tiff(dtype: type) -> None:
    with pytest.raises(UnsupportedImage, match="floating-point"):
        decode_image(_tifffile(np.zeros((4, 4), dtype)))


def test_decode_refuses_image_over_the_pixel_limit_before_decoding() -> None:
    # A 40000x40000 header over a few bytes of data: inflating it would take 1.6 GB.
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    data += _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b"")

    with pytest.raises(InvalidImage, match="1600 megapixels") as raised:
        decode_image(data)
    assert raised.value.code == "size.too_large"


def test_decode_refuses_a_header_without_pixels_as_too_small() -> None:
    data = bytearray(_pillow(Image.new("L", (4, 4)), "TIFF"))
    width_tag = data.index(struct.pack("<HHI", 256, 4, 1))  # ImageWidth, one LONG
    data[width_tag + 8 : width_tag + 12] = struct.pack("<I", 0)

    with pytest.raises(InvalidImage, match="empty size") as raised:
        decode_image(bytes(data))
    assert raised.value.code == "size.too_small"


def test_decode_applies_a_lower_pixel_limit_to_wide_tiffs() -> None:
    data = _tifffile(_noise((20, 20, 3)), photometric="rgb")

    with pytest.raises(InvalidImage, match="over the limit"):
        decode_image(data, max_pixels=399)


def test_decode_accepts_a_100_megapixel_scan() -> None:
    data = _pillow(Image.new("1", (10_000, 10_000)), "PNG")

    decoded = decode_image(data)

    assert decoded.pixels.shape == (10_000, 10_000)
