"""A PNG writer for 8- and 16-bit gray, gray+alpha, RGB and RGBA, with metadata chunks.

Pillow cannot hold 16-bit colour, so 16-bit outputs are written here with zlib and numpy.
Chunks follow the PNG specification (third edition) in this order: IHDR, iCCP, pHYs, eXIf,
tEXt/iTXt, IDAT, IEND. Each row gets the filter (None, Sub, Up, Average or Paeth) whose
output has the smallest sum of absolute signed bytes, the heuristic the specification
recommends; filters work on bytes, so 16-bit samples are filtered as big-endian byte pairs.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: PNG file signature.
SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Inches per metre, for pHYs (which counts pixels per metre).
_INCHES_PER_METRE = 1 / 0.0254

#: PNG colour types by channel count (gray, gray+alpha, RGB, RGBA).
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}

#: zlib level for IDAT; 6 is zlib's (and Pillow's) default balance of size and speed.
COMPRESS_LEVEL = 6

#: Rows filtered and compressed per step, to bound memory on very large scans (rows).
_ROWS_PER_BLOCK = 64

#: Largest IDAT chunk written (bytes); any size is valid, this keeps chunks moderate.
_IDAT_SIZE = 1 << 20


def write_png(
    samples: NDArray[Any],
    *,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    exif: bytes | None = None,
    text: Mapping[str, str] | None = None,
    compress_level: int = COMPRESS_LEVEL,
) -> bytes:
    """Encode samples as a PNG file.

    Args:
        samples: HxW (gray), HxWx2 (gray+alpha), HxWx3 (RGB) or HxWx4 (RGBA), uint8 or
            uint16; alpha is unassociated.
        icc_profile: ICC profile for an iCCP chunk, or None.
        dpi: Resolution in dots per inch for a pHYs chunk, or None.
        exif: EXIF block for an eXIf chunk (a leading ``Exif\\0\\0`` is removed), or None.
        text: Keyword to text. Latin-1 text goes in tEXt chunks, other text (and the XMP
            keyword ``XML:com.adobe.xmp``) in uncompressed UTF-8 iTXt chunks.
        compress_level: zlib level, 0-9.

    Returns:
        The PNG file.

    Raises:
        ValueError: If the array's shape or dtype cannot be written.
    """
    if samples.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG samples must be uint8 or uint16, not {samples.dtype}")
    if samples.ndim == 2:
        samples = samples[..., np.newaxis]
    if samples.ndim != 3 or samples.shape[2] not in _COLOUR_TYPES:
        raise ValueError(f"cannot write an array of shape {samples.shape} as PNG")
    height, width, channels = samples.shape
    if height < 1 or width < 1:
        raise ValueError("cannot write an empty image as PNG")
    depth = samples.dtype.itemsize * 8
    header = struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    if dpi:
        per_metre = [round(value * _INCHES_PER_METRE) for value in dpi]
        chunks.append(_chunk(b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    for keyword, value in (text or {}).items():
        chunks.append(_text_chunk(keyword, value))
    chunks.extend(_chunk(b"IDAT", data) for data in _idat(samples, compress_level))
    chunks.append(_chunk(b"IEND", b""))
    return SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _text_chunk(keyword: str, value: str) -> bytes:
    """A tEXt chunk when Latin-1 can hold the text, else an uncompressed iTXt chunk."""
    name = keyword.encode("latin-1")
    if not 1 <= len(name) <= 79:
        raise ValueError(f"PNG text keyword must be 1-79 Latin-1 characters: {keyword!r}")
    if keyword != "XML:com.adobe.xmp":
        try:
            return _chunk(b"tEXt", name + b"\x00" + value.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    # keyword, NUL, compression flag 0, method 0, empty language tag, empty translation
    return _chunk(b"iTXt", name + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))


def _idat(samples: NDArray[Any], level: int) -> Iterator[bytes]:
    """Yield the compressed image data in chunk-sized pieces."""
    compressor = zlib.compressobj(level)
    pending = b""
    bytes_per_pixel = samples.shape[2] * samples.dtype.itemsize
    previous = np.zeros(samples.shape[1] * bytes_per_pixel, dtype=np.uint8)
    for start in range(0, samples.shape[0], _ROWS_PER_BLOCK):
        block = _row_bytes(samples[start : start + _ROWS_PER_BLOCK])
        pending += compressor.compress(_filter_rows(block, previous, bytes_per_pixel))
        previous = block[-1]
        while len(pending) >= _IDAT_SIZE:
            yield pending[:_IDAT_SIZE]
            pending = pending[_IDAT_SIZE:]
    pending += compressor.flush()
    for offset in range(0, len(pending), _IDAT_SIZE):
        yield pending[offset : offset + _IDAT_SIZE]


def _row_bytes(samples: NDArray[Any]) -> NDArray[np.uint8]:
    """Rows of the image as PNG lays them out: big-endian samples, interleaved channels."""
    rows = samples.shape[0]
    big_endian = samples.astype(samples.dtype.newbyteorder(">"), copy=False)
    return np.ascontiguousarray(big_endian).view(np.uint8).reshape(rows, -1)


def _filter_rows(
    rows: NDArray[np.uint8], previous: NDArray[np.uint8], bytes_per_pixel: int
) -> bytes:
    """Filter each row with the best of the five PNG filters; return filter byte + row."""
    raw = rows.astype(np.int16)
    up = np.vstack([previous[np.newaxis].astype(np.int16), raw[:-1]])
    left = np.zeros_like(raw)
    left[:, bytes_per_pixel:] = raw[:, :-bytes_per_pixel]
    upper_left = np.zeros_like(raw)
    upper_left[:, bytes_per_pixel:] = up[:, :-bytes_per_pixel]
    candidates = np.stack(
        [
            raw,
            raw - left,
            raw - up,
            raw - (left + up) // 2,
            raw - _paeth(left, up, upper_left),
        ]
    ).astype(np.uint8)
    # Score each filtered row as the sum of its bytes read as signed values.
    scores = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    best = scores.argmin(axis=0)
    chosen = candidates[best, np.arange(rows.shape[0])]
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = best
    out[:, 1:] = chosen
    return out.tobytes()


def _paeth(
    left: NDArray[np.int16], up: NDArray[np.int16], upper_left: NDArray[np.int16]
) -> NDArray[np.int16]:
    """The Paeth predictor: whichever neighbour is nearest to left + up - upper_left."""
    estimate = left + up - upper_left
    to_left = np.abs(estimate - left)
    to_up = np.abs(estimate - up)
    to_upper_left = np.abs(estimate - upper_left)
    predicted: NDArray[np.int16] = np.where(
        (to_left <= to_up) & (to_left <= to_upper_left),
        left,
        np.where(to_up <= to_upper_left, up, upper_left),
    )
    return predicted
