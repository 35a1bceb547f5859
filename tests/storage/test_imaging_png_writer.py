"""Tests of storage.codecs.png's writer, read back by OpenCV (libpng) and Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from imaging_samples import cv2_read as _cv2_read
from imaging_samples import noise as _noise
from PIL import Image

from storage.codecs.png import write_png
from storage.metadata import srgb_icc

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
