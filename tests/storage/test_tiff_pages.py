"""Multi-page TIFFs and IIM records carried at the byte level, read back with tifffile and Pillow.

The further pages of a TIFF original are carried into its TIFF copy untouched (same
samples, same compression, same tags), in either byte order where the data allows; the
IIM record is carried as tag 33723. None of this needs ExifTool.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from PIL import Image, IptcImagePlugin

from storage.codecs.tiff_ifd import count_pages
from storage.imaging import decode_image, encode_image
from storage.iptc import iim_text, insert_app13

#: An IIM record: envelope version, then ObjectName, By-line and two Keywords.
IIM = b"".join(
    b"\x1c" + bytes([record, number]) + struct.pack(">H", len(value)) + value
    for record, number, value in [
        (1, 0, b"\x00\x04"),
        (2, 5, b"Harbour, 1911"),
        (2, 80, b"J. Smith"),
        (2, 25, b"ships"),
        (2, 25, b"quay"),
    ]
)


def _pages(byteorder: str, pages: list[NDArray[Any]], **first: Any) -> bytes:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, byteorder=byteorder) as writer:
        for index, page in enumerate(pages):
            options = first if index == 0 else {}
            writer.write(page, compression="zlib", metadata=None, **options)
    return buffer.getvalue()


def _gray(seed: int, dtype: type = np.uint8) -> NDArray[Any]:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top, (48, 64), dtype=dtype)


def _copy(data: bytes, fmt: str | None = None) -> bytes:
    decoded = decode_image(data, name="scan.tif")
    return encode_image(np.dstack([decoded.pixels] * 3), source=decoded, format=fmt)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_further_pages_are_carried_untouched_in_either_byte_order(byteorder: str) -> None:
    originals = [_gray(1), _gray(2), _gray(3)]
    iim_tag = (33723, 7, len(IIM), IIM, True)
    data = _pages(byteorder, originals, extratags=[iim_tag], description="page one")

    copy = _copy(data)

    with tifffile.TiffFile(io.BytesIO(copy)) as tif:
        assert [page.shape for page in tif.pages] == [(48, 64, 3), (48, 64), (48, 64)]
        for page, original in zip(tif.pages[1:], originals[1:], strict=True):
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            np.testing.assert_array_equal(page.asarray(), original)
    with Image.open(io.BytesIO(copy)) as image:
        info = IptcImagePlugin.getiptcinfo(image)
    assert info is not None and info[(2, 5)] == b"Harbour, 1911"
    assert info[(2, 25)] == [b"ships", b"quay"]


def test_big_endian_pages_of_16_bit_samples_are_named_and_left_out() -> None:
    data = _pages(">", [_gray(1), _gray(2, np.uint16)])

    decoded = decode_image(data, name="scan.tif")
    copy = _copy(data)

    assert decoded.pages == 2 and decoded.metadata.extra_pages == ()
    assert decoded.metadata.pages_note is not None
    assert "big-endian" in decoded.metadata.pages_note
    assert count_pages(copy) == 1
    with tifffile.TiffFile(io.BytesIO(copy)) as tif:
        assert tif.pages.first.shape == (48, 64, 3)


def test_little_endian_16_bit_pages_are_carried_after_a_16_bit_first_page() -> None:
    originals = [_gray(1, np.uint16), _gray(2, np.uint16)]
    data = _pages("<", originals)

    copy = _copy(data)

    with tifffile.TiffFile(io.BytesIO(copy)) as tif:
        assert len(tif.pages) == 2 and tif.pages.first.dtype == np.uint16
        np.testing.assert_array_equal(tif.pages[1].asarray(), originals[1])


def test_a_png_copy_of_a_multi_page_tiff_has_one_page() -> None:
    data = _pages("<", [_gray(1), _gray(2)])
    with Image.open(io.BytesIO(_copy(data, "png"))) as image:
        assert getattr(image, "n_frames", 1) == 1


def test_a_jpeg_copy_gets_the_iim_record_in_one_app13_segment_after_app1() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "Leica"
    Image.fromarray(_gray(4)).save(buffer, "JPEG", exif=exif.tobytes())
    jpeg = insert_app13(buffer.getvalue(), IIM)

    markers = []
    at = 2
    while jpeg[at + 1] != 0xDA:  # up to start of scan
        markers.append(jpeg[at + 1])
        at += 2 + struct.unpack(">H", jpeg[at + 2 : at + 4])[0]
    assert markers.index(0xED) == markers.index(0xE1) + 1
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        assert IptcImagePlugin.getiptcinfo(image) is not None
        assert iim_text(image.info["photoshop"][0x0404])[80] == ["J. Smith"]
