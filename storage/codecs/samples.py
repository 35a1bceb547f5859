"""Operations on sample arrays shared by the decoders and the encoder.

Arrays follow one contract: HxW (gray) or HxWxC, uint8 or uint16, alpha unassociated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Words for mode names, for ``DecodedImage.mode_description``.
MODE_KINDS = {
    "1": "bilevel",
    "L": "grayscale",
    "LA": "grayscale",
    "La": "grayscale",
    "I": "grayscale",
    "P": "palette",
    "PA": "palette",
    "RGB": "RGB",
    "RGBA": "RGB",
    "RGBa": "RGB",
    "RGBX": "RGB",
    "YCbCr": "YCbCr",
    "CMYK": "CMYK",
}

#: Largest 8-bit and 16-bit sample values.
MAX_8 = 0xFF
MAX_16 = 0xFFFF

#: Array transforms that turn an image upright, by EXIF orientation (1 = already upright).
#: They match Pillow's ``ImageOps.exif_transpose``: 2 mirrors, 3 turns 180 degrees, 4 flips,
#: 5 transposes, 6 turns 90 degrees clockwise, 7 transverses, 8 turns 90 anticlockwise.
_ORIENTATIONS: dict[int, Callable[[NDArray[Any]], NDArray[Any]]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


def apply_orientation(samples: NDArray[Any], orientation: int) -> NDArray[Any]:
    """Turn an array upright according to an EXIF orientation value.

    Args:
        samples: HxW or HxWxC array as stored in the file.
        orientation: EXIF orientation, 1-8.

    Returns:
        The upright array (a view; copy it to make it contiguous).

    Raises:
        KeyError: If the orientation is not 1-8.
    """
    return _ORIENTATIONS[orientation](samples)


def key_alpha(samples: NDArray[Any], key: Any) -> NDArray[Any] | None:
    """Build alpha from a PNG colour key (tRNS): transparent where a pixel equals the key.

    Args:
        samples: HxW gray or HxWx3 RGB samples.
        key: ``info["transparency"]`` from Pillow: an int for gray, an (r, g, b) tuple for
            RGB; anything else (None, palette alpha bytes) gives no alpha.

    Returns:
        HxW alpha of the samples' dtype (0 on the key colour, full elsewhere), or None.
    """
    if samples.ndim == 2 and isinstance(key, int):
        matches = samples == key
    elif samples.ndim == 3 and isinstance(key, tuple) and len(key) == samples.shape[2]:
        matches = (samples == np.asarray(key, dtype=samples.dtype)).all(axis=2)
    else:
        return None
    full = np.iinfo(samples.dtype).max
    alpha: NDArray[Any] = np.where(matches, 0, full).astype(samples.dtype)
    return alpha


def scale_to_16_bits(samples: NDArray[Any], bits: int) -> NDArray[np.uint16]:
    """Scale unsigned samples of any depth to the full 16-bit range, rounding.

    Args:
        samples: Unsigned integer samples holding ``bits`` significant bits.
        bits: Bits per sample in the file (for example 12, 16 or 32).

    Returns:
        uint16 samples where the largest ``bits``-bit value maps to 65535.
    """
    if bits == 16:
        return samples.astype(np.uint16, copy=False)
    top = (1 << bits) - 1
    wide = samples.astype(np.uint64)
    scaled = (wide * MAX_16 + top // 2) // top
    return scaled.astype(np.uint16)


def to_8_bits(samples: NDArray[Any]) -> NDArray[np.uint8]:
    """Reduce uint16 samples to uint8 with rounding (uint8 passes through).

    Args:
        samples: uint8 or uint16 samples.

    Returns:
        uint8 samples; 16-bit values map as round(v / 257).
    """
    if samples.dtype == np.uint8:
        return samples
    wide = samples.astype(np.uint32)
    reduced: NDArray[np.uint8] = ((wide * MAX_8 + MAX_16 // 2) // MAX_16).astype(np.uint8)
    return reduced


def to_dtype(samples: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """Convert uint8/uint16 samples to the other depth, keeping full scale.

    Args:
        samples: uint8 or uint16 samples.
        dtype: ``np.uint8`` or ``np.uint16``.

    Returns:
        Samples of ``dtype`` (8 to 16 bits multiplies by 257, exactly).
    """
    if samples.dtype == dtype:
        return samples
    if dtype == np.uint8:
        return to_8_bits(samples)
    return samples.astype(np.uint16) * np.uint16(257)


def unpremultiply(colour: NDArray[Any], alpha: NDArray[Any]) -> NDArray[Any]:
    """Undo associated (premultiplied) alpha.

    Args:
        colour: HxW or HxWxC samples multiplied by alpha.
        alpha: HxW alpha of the same dtype.

    Returns:
        Colour samples of the same dtype, divided by alpha (unchanged where alpha is 0).
    """
    full = np.iinfo(colour.dtype).max
    weight = alpha.astype(np.float64)
    if colour.ndim == 3:
        weight = weight[..., np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(weight > 0, colour * (full / weight), colour)
    return np.clip(np.rint(straight), 0, full).astype(colour.dtype)
