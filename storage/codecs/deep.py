"""Full 16-bit samples from Pillow for colour images it would otherwise cut to 8 bits.

Pillow has no 16-bit colour modes: it opens a 48-bit RGB or 64-bit RGBA PNG or TIFF as 8-bit
RGB(A), keeping only the high byte of each sample and saying nothing. Its decoders do the
hard part (inflating, PNG row filters, TIFF predictors, libtiff codecs) on the full 16-bit
rows, though, and only the final unpacking step drops the low byte. Decoding twice, once
with the unpacker that takes the high byte and once with the one that takes the low byte
(the same unpacker for the other byte order), and joining the two recovers every bit. The
data are decoded twice, which is cheaper than a second PNG or LZW implementation.

Gray+alpha 16-bit PNG is simpler: its four big-endian bytes per pixel unpack as 8-bit RGBA,
in order gray high, gray low, alpha high, alpha low.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import ImageFile

logger = logging.getLogger(__name__)

#: The letter Pillow uses for the machine's own byte order in raw modes ("N" resolves to it).
_NATIVE = "L" if sys.byteorder == "little" else "B"
_OTHER = {"L": "B", "B": "L"}


def deep_rawmode(image: ImageFile.ImageFile) -> str | None:
    """Return the raw mode of a 16-bit colour image that Pillow would cut to 8 bits.

    Args:
        image: An opened, not yet loaded, Pillow image.

    Returns:
        The raw mode (``"RGB;16B"``, ``"RGBA;16L"``, ``"LA;16B"`` ...) when the image has
        16-bit colour or gray+alpha samples this module can recover, else None.
    """
    if len(image.tile) != 1:
        return None
    rawmode = _rawmode(image.tile[0].args)
    if rawmode is None:
        return None
    if rawmode == "LA;16B":
        return rawmode
    if rawmode.startswith(("RGB;16", "RGBA;16", "RGBX;16")) and rawmode[-1] in "BLN":
        return rawmode
    return None


def read_deep(
    open_image: Callable[[], ImageFile.ImageFile],
) -> tuple[NDArray[np.uint16], ImageFile.ImageFile]:
    """Decode a 16-bit colour image through Pillow without losing the low bytes.

    Args:
        open_image: Opens the image afresh each time it is called (it is decoded twice).

    Returns:
        HxWxC uint16 samples in the file's channel order (C is 3 for RGB, where an unused
        fourth sample of RGBX is dropped, 4 for RGBA and 2 for gray+alpha), and the last
        loaded image, whose ``info`` and EXIF are complete.

    Raises:
        ValueError: If the image is not one ``deep_rawmode`` accepts.
        OSError: If Pillow fails to decode it (truncated or corrupt data).
    """
    image = open_image()
    rawmode = deep_rawmode(image)
    if rawmode is None:
        raise ValueError(f"not a 16-bit colour image Pillow can unpack: {image.tile}")
    if rawmode == "LA;16B":
        packed = _decode_with(image, "RGBA").astype(np.uint16)
        gray_alpha = (packed[..., 0::2] << 8) | packed[..., 1::2]
        return gray_alpha.astype(np.uint16, copy=False), image
    order = _NATIVE if rawmode[-1] == "N" else rawmode[-1]
    stem = rawmode[:-1]
    high = _decode_with(image, stem + order).astype(np.uint16)
    second = open_image()
    low = _decode_with(second, stem + _OTHER[order]).astype(np.uint16)
    joined = (high << 8) | low
    return joined.astype(np.uint16, copy=False), second


def _rawmode(args: Any) -> str | None:
    """Pull the raw mode out of a tile's decoder arguments (a str, or a tuple led by one)."""
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _decode_with(image: ImageFile.ImageFile, rawmode: str) -> NDArray[np.uint8]:
    """Decode an opened image with its tile's raw mode replaced."""
    tile = image.tile[0]
    args: Any = tile.args
    new_args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    image.tile = [tile._replace(args=new_args)]
    logger.debug("decoding %s with raw mode %s", image.format, rawmode)
    image.load()
    return np.asarray(image)
