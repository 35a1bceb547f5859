"""Whether an original is already in colour, or a black-and-white photograph stored as RGB.

Archives scan black-and-white prints in RGB all the time: grey stored in three channels,
with sensor noise, JPEG's chroma noise, a colour cast from the paper or the lamp, and the
single hue of a toned print (sepia, selenium, gold, cyanotype). None of that is colour to
colorize over. A photograph in colour (or hand-coloured) has chroma in several hues.

The measure, on at most ``GRID`` x ``GRID`` cells (each the mean of a block of pixels, which
averages noise and JPEG's 8x8 artefacts away):

1. chroma per cell: the Cb and Cr of ITU-R BT.601 (B - Y and R - Y) in 8-bit units;
2. the tone axis: the principal direction of those chroma vectors through grey; a toned
   or colour-cast print has all its chroma along it, on one side of grey;
3. a cell is coloured when its chroma leaves that axis by more than ``CHROMA_THRESHOLD``
   (another hue) or lies on the far side of grey by as much (the opposite hue);
4. the image is in colour when more than ``COLOURED_SHARE`` of its cells are coloured.

Measured on synthetic cases (tests/storage/test_chroma.py): grey stored as RGB and saved as
JPEG at quality 75 with 4:2:0 chroma: no coloured cell; grey with Gaussian noise of 6 levels
per channel: none; a sepia ramp toned up to 40 levels: none; a photograph-like scene with
sky, foliage and skin tones: most cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CHROMA_THRESHOLD", "COLOURED_SHARE", "ChromaReading", "read_chroma"]

#: Longest side of the grid of cells the image is averaged down to (cells).
GRID = 128
#: Pixels per side averaged into one cell at most; larger images are sampled with a stride.
CELL = 8
#: Pixels per side averaged into one cell at least, where the image allows (pixels).
MIN_CELL = 4
#: Chroma off the tone axis (8-bit Cb/Cr units) beyond which a cell counts as coloured;
#: block-averaged noise and JPEG chroma error stay well under it.
CHROMA_THRESHOLD = 12.0
#: Share of coloured cells beyond which the image is in colour (0-1).
COLOURED_SHARE = 0.02


@dataclass(frozen=True)
class ChromaReading:
    """How much colour an image holds.

    Attributes:
        coloured_share: Share of cells (0-1) with chroma off the tone axis.
        peak_chroma: 95th percentile of the cells' chroma, in 8-bit Cb/Cr units.
    """

    coloured_share: float
    peak_chroma: float

    @property
    def in_colour(self) -> bool:
        """Whether the image is already in colour."""
        return self.coloured_share > COLOURED_SHARE

    @property
    def toned(self) -> bool:
        """Whether it has chroma, but of one hue only (toned, or a colour cast)."""
        return not self.in_colour and self.peak_chroma > CHROMA_THRESHOLD


def read_chroma(pixels: NDArray[Any]) -> ChromaReading:
    """Measure the colour of decoded pixels.

    Args:
        pixels: HxW gray or HxWx3 RGB samples, uint8 or uint16.

    Returns:
        The reading; zero for gray pixels.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return ChromaReading(0.0, 0.0)
    cells = _cells(pixels)
    red, green, blue = cells[..., 0], cells[..., 1], cells[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    chroma = np.stack([(blue - luma).ravel(), (red - luma).ravel()], axis=1)
    magnitude = np.hypot(chroma[:, 0], chroma[:, 1])
    # The tone axis: the eigenvector of the largest eigenvalue of the chroma's second
    # moments about grey (not about their mean: a toned print's hue points away from grey).
    moments = chroma.T @ chroma / len(chroma)
    axis = np.linalg.eigh(moments)[1][:, -1]
    along = chroma @ axis
    if along.sum() < 0:
        axis, along = -axis, -along
    across = np.abs(chroma @ np.array([-axis[1], axis[0]]))
    coloured = (across > CHROMA_THRESHOLD) | (along < -CHROMA_THRESHOLD)
    return ChromaReading(float(coloured.mean()), float(np.percentile(magnitude, 95)))


def _cells(pixels: NDArray[Any]) -> NDArray[np.float64]:
    """Average the image down to at most about GRID x GRID cells, in 8-bit units."""
    height, width = pixels.shape[:2]
    stride = max(1, max(height, width) // (GRID * CELL))
    sampled = pixels[::stride, ::stride]
    size = min(CELL, max(MIN_CELL, -(-max(sampled.shape[:2]) // GRID)))
    size = min(size, sampled.shape[0], sampled.shape[1])
    height, width = sampled.shape[0] // size * size, sampled.shape[1] // size * size
    blocks = sampled[:height, :width].astype(np.float32)
    if pixels.dtype == np.uint16:
        blocks /= 257.0
    cells: NDArray[np.float64] = (
        blocks.reshape(height // size, size, width // size, size, 3).mean(axis=(1, 3))
    ).astype(np.float64)
    return cells
