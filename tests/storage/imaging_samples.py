"""Sample files for the storage.imaging tests (a uniquely named module, importable from them).

Every sample is written by a real encoder (Pillow, tifffile, OpenCV) in memory, or, for a
few layouts those encoders do not write, by hand from the file format's specification.
OpenCV also serves as an independent reader of 16-bit PNG output.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import cv2
import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image

from storage.imaging import DecodedImage, decode_image

#: The one seeded generator behind every random sample of the imaging tests.
RNG = np.random.default_rng(20250304)


def noise(shape: tuple[int, ...], dtype: type = np.uint16) -> NDArray[Any]:
    """Random samples over the full range, with a smooth band so PNG filters vary.

    Args:
        shape: HxW or HxWxC.
        dtype: An unsigned integer type.

    Returns:
        Samples of that shape and type.
    """
    top = np.iinfo(dtype).max
    samples = RNG.integers(0, top, size=shape, endpoint=True, dtype=dtype)
    ramp: NDArray[Any] = np.linspace(0, top, shape[1]).astype(dtype)
    samples[: shape[0] // 2, :] = ramp[np.newaxis, :, np.newaxis] if len(shape) == 3 else ramp
    return samples


def pillow_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """Return the file Pillow writes for ``image``.

    Args:
        image: The picture.
        fmt: Pillow's format name (``"PNG"``, ``"TIFF"``...).
        **options: Options of ``Image.save``.

    Returns:
        The encoded file.
    """
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def tifffile_bytes(samples: NDArray[Any], **options: Any) -> bytes:
    """Return the TIFF file tifffile writes for ``samples``.

    Args:
        samples: The samples, in tifffile's layout.
        **options: Options of ``tifffile.imwrite``.

    Returns:
        The encoded file.
    """
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, **options)
    return buffer.getvalue()


def cv2_png(samples: NDArray[Any]) -> bytes:
    """PNG written by OpenCV (libpng); colour arrays are given in RGB(A) order.

    Args:
        samples: HxW, HxWx3 or HxWx4 uint8 or uint16.

    Returns:
        The encoded file.
    """
    if samples.ndim == 3:
        samples = samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    ok, encoded = cv2.imencode(".png", samples)
    assert ok
    return encoded.tobytes()


def cv2_read(data: bytes) -> NDArray[Any]:
    """Read with OpenCV, unchanged depth and channels, returned in RGB(A) order.

    Args:
        data: An encoded file.

    Returns:
        The samples as stored.
    """
    samples: NDArray[Any] | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert samples is not None
    if samples.ndim == 3:
        samples = samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    return samples


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC.

    Args:
        kind: The four-letter chunk type.
        data: The chunk's data.

    Returns:
        The chunk as it appears in a file.
    """
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


def lzw_rgb48_tiff(samples: NDArray[np.uint16]) -> bytes:
    """A little-endian, single-strip, LZW-compressed 48-bit RGB TIFF, written by hand.

    Args:
        samples: HxWx3 uint16 RGB.

    Returns:
        The encoded file.
    """
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


def decode_saved(fmt: str, samples: NDArray[Any], **options: Any) -> DecodedImage:
    """Decode the file Pillow writes for ``samples``, as an original to encode a copy of.

    Args:
        fmt: Pillow's format name.
        samples: Samples that ``Image.fromarray`` accepts.
        **options: Options of ``Image.save``.

    Returns:
        The decoded original.
    """
    return decode_image(pillow_bytes(Image.fromarray(samples), fmt, **options))
