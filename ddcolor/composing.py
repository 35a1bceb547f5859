"""The last step of the DDColor pipeline: ab brought to full resolution and joined with L.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) predicts
ab on its square grid; the output joins the upsampled ab (:class:`ddcolor.transforms.AbUpsampler`)
with the original full-resolution L and converts Lab to RGB (:mod:`ddcolor.colorspace`).

The work runs band by band (:func:`ddcolor.colorspace.band_rows`), each band's channels as
planes small enough to stay in the processor's caches, and bands are shared among threads:
numpy releases the GIL in its loops, the bands are independent, and each writes its own rows
of the output. The result does not depend on the number of threads.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ddcolor.colorspace import ColorMath, band_rows, lab_planes_to_rgb, lightness
from ddcolor.registry import UpsampleMethod
from ddcolor.transforms import AbUpsampler

__all__ = ["compose"]

logger = logging.getLogger(__name__)


def compose(
    image: np.ndarray,
    ab_small: np.ndarray,
    light_small: np.ndarray,
    math: ColorMath,
    upsample: UpsampleMethod,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """Join the upsampled ab with the full-resolution L of an image, into RGB.

    Args:
        image: HxW or HxWx3, uint8 or uint16: the original.
        ab_small: hxwx2 float32 ab predicted on the network's grid.
        light_small: hxw float32 L of the network input (the guide of ``"guided"``).
        math: Colour arithmetic (``opencv`` for 8-bit, ``exact`` for 16-bit).
        upsample: How ab is brought to full resolution.
        threads: Threads sharing the bands; None for torch's intra-op thread count.

    Returns:
        HxWx3 RGB of the image's dtype.
    """
    height, width = image.shape[:2]
    top = np.float32(np.iinfo(image.dtype).max)
    upsampler = AbUpsampler(ab_small, (height, width), upsample, guide=light_small)
    output = np.empty((height, width, 3), dtype=image.dtype)
    step = band_rows(width)

    def band(start: int) -> None:
        stop = min(start + step, height)
        light = lightness(image[start:stop], math=math)
        a, b = upsampler.planes(start, stop, guide=light)
        for k, plane in enumerate(lab_planes_to_rgb(light, a, b, math=math)):
            plane *= top
            output[start:stop, :, k] = np.rint(plane, out=plane)

    starts = range(0, height, step)
    workers = min(threads or torch.get_num_threads(), len(starts))
    if workers <= 1:
        for start in starts:
            band(start)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="compose") as pool:
            list(pool.map(band, starts))
    return output
