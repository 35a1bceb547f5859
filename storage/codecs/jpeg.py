"""JPEG quality estimation from quantization tables.

Most JPEG encoders (libjpeg and everything built on it) derive their luminance table from the
example table in Annex K of the JPEG standard (ITU-T T.81), scaled by the IJG quality
formula. Matching a file's table against those scalings recovers the quality setting; for
encoders with their own tables the result is the nearest IJG quality, which is still a fair
measure of how much was thrown away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Example luminance quantization table of ITU-T T.81 Annex K.1, in natural (row) order.
_ANNEX_K_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
).ravel()

#: Entries in one quantization table.
_TABLE_SIZE = 64


def ijg_table(quality: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    """Return the luminance table libjpeg uses at a quality setting.

    Args:
        quality: IJG quality, 1-100.

    Returns:
        The 64 entries in natural order, clamped to the baseline range 1-255.
    """
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table: np.ndarray[tuple[int], np.dtype[np.int64]] = np.clip(
        (_ANNEX_K_LUMINANCE * scale + 50) // 100, 1, 255
    )
    return table


def estimate_quality(quantization: Mapping[int, Sequence[int]] | None) -> int | None:
    """Estimate the IJG quality a JPEG was saved at.

    Args:
        quantization: ``Image.quantization`` of a JPEG opened with Pillow: tables by index,
            each 64 entries in natural order; table 0 is the luminance table.

    Returns:
        The quality (1-100) whose IJG table is nearest to table 0, or None without one.
    """
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(quantization[0], dtype=np.int64)
    if table.size != _TABLE_SIZE:
        return None
    errors = [int(np.abs(ijg_table(q) - table).sum()) for q in range(1, 101)]
    # Several qualities can give the same table near 100; report the highest of them.
    best = min(errors)
    return max(q for q, error in zip(range(1, 101), errors, strict=True) if error == best)
