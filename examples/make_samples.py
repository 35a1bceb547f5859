"""Rebuild the sample photographs in this folder from scikit-image's bundled data.

Needs scikit-image (for ``skimage.data``), which the project itself does not depend on::

    python examples/make_samples.py

Each sample is one of scikit-image's grayscale photographs, written in one of the formats an
archive sends: 8-bit JPEG, 8-bit PNG, PNG with an alpha channel, and 16-bit TIFF. README.md
gives their sources and licences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image
from skimage import data

#: Folder the samples are written to (this file's folder).
HERE = Path(__file__).resolve().parent

#: JPEG quality of the 8-bit JPEG sample (IJG scale), typical of an access copy.
JPEG_QUALITY = 90

#: Width of the soft edge of the vignette, as a fraction of the ellipse radius.
VIGNETTE_EDGE = 0.2

#: Resolution recorded in the samples' metadata, in dots per inch.
DPI = 300


def vignette(height: int, width: int) -> NDArray[np.uint8]:
    """Return an elliptical alpha mask, opaque in the middle and fading out to the corners.

    Args:
        height: Mask height in pixels.
        width: Mask width in pixels.

    Returns:
        HxW uint8 alpha.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    radius = np.hypot((x - (width - 1) / 2) / (width / 2), (y - (height - 1) / 2) / (height / 2))
    opacity = np.clip((1.0 - radius) / VIGNETTE_EDGE, 0.0, 1.0)
    return np.rint(opacity * 255).astype(np.uint8)


def widen_to_16_bits(gray: NDArray[np.uint8]) -> NDArray[np.uint16]:
    """Scale 8-bit gray to 16 bits and smooth it lightly so it has in-between levels.

    The result is still 8-bit information: it exercises the 16-bit code paths but is no
    substitute for a real 16-bit scan.

    Args:
        gray: HxW uint8.

    Returns:
        HxW uint16: the values times 257, blurred with a 3x3 binomial kernel.
    """
    wide = gray.astype(np.float64) * 257.0
    padded = np.pad(wide, 1, mode="edge")
    rows = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
    smooth = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 4
    return np.clip(np.rint(smooth), 0, 65535).astype(np.uint16)


def main() -> None:
    """Write camera.jpg, coins.png, brick-vignette.png and coins-16bit.tif."""
    camera = data.camera()
    exif = Image.Exif()
    exif[0x013B] = "Lav Varshney"  # Artist
    exif[0x8298] = "CC0 (via scikit-image)"  # Copyright
    Image.fromarray(camera).save(
        HERE / "camera.jpg", quality=JPEG_QUALITY, dpi=(DPI, DPI), exif=exif.tobytes()
    )

    coins = data.coins()
    Image.fromarray(coins).save(HERE / "coins.png", dpi=(DPI, DPI), optimize=True)

    brick = data.brick()
    pair = np.dstack([brick, vignette(*brick.shape)])
    Image.fromarray(pair).save(HERE / "brick-vignette.png", optimize=True)

    tifffile.imwrite(
        HERE / "coins-16bit.tif",
        widen_to_16_bits(coins),
        compression="zlib",
        predictor=True,
        resolution=(DPI, DPI),
        resolutionunit="inch",
        description="Greek coins from Pompeii (Brooklyn Museum), widened from 8 to 16 bits",
        metadata=None,
    )


if __name__ == "__main__":
    main()
