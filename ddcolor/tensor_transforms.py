"""The resampling of :mod:`ddcolor.transforms` as torch operations, on any device.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023, arXiv:2212.11613; code at https://github.com/piddnad/DDColor under Apache-2.0, the
licence under which the authors also publish the checkpoints) sees the image resized to a
square (OpenCV's INTER_LINEAR) and predicts ab on that grid, which is brought back to full
resolution. :func:`resize_bilinear` and :class:`TensorAbUpsampler` do both where the network
runs, with the taps and weights of :mod:`ddcolor.transforms` (computed there, in numpy, for
one axis at a time) and its order of float32 and float64 operations, so that they give the
numpy path's values: the resize and every upsampling method (``nearest``, ``bilinear``,
``bicubic``, ``guided``) equal to the last float bit on the CPU. Guided upsampling's grid
maps (He et al., "Guided Image Filtering", TPAMI 2013) are computed in float64 with cumulative
sums, whose order of additions may differ from numpy's in the last bits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ddcolor.registry import UpsampleMethod, validate_upsample
from ddcolor.tensor_colorspace import divide
from ddcolor.transforms import (
    GUIDED_EPS,
    GUIDED_RADIUS,
    _linear_taps,
    _nearest_index,
    _torch_taps,
)

__all__ = ["TensorAbUpsampler", "resize_bilinear"]

logger = logging.getLogger(__name__)

#: Reads rows of an image as float32 in [0, 1] (HxW or HxWxC): given source row indices.
RowReader = Callable[[torch.Tensor], torch.Tensor]


def resize_bilinear(
    read_rows: RowReader,
    source: tuple[int, int],
    size: tuple[int, int],
    device: torch.device,
    band_rows: int,
) -> torch.Tensor:
    """Resize like :func:`ddcolor.transforms.resize_bilinear` (OpenCV's INTER_LINEAR).

    Only the two source rows around each output row are read, a band of output rows at a
    time, so memory stays small whatever the image size.

    Args:
        read_rows: Returns the source rows at given int64 indices as float32 in [0, 1].
        source: Source (H, W).
        size: Output (h, w).
        device: Where to compute.
        band_rows: Output rows per band.

    Returns:
        hxw or hxwxC float32 on ``device``.
    """
    height, width = size
    r0, r1, wr = (torch.from_numpy(a).to(device) for a in _linear_taps(source[0], height))
    c0, c1, wc = (torch.from_numpy(a).to(device) for a in _linear_taps(source[1], width))
    bands = []
    for start in range(0, height, band_rows):
        band = slice(start, start + band_rows)
        rows = []
        for index in (r0[band], r1[band]):
            pixels = read_rows(index).double()
            w = wc.view(1, -1, *([1] * (pixels.ndim - 2)))
            rows.append(pixels[:, c0] * (1.0 - w) + pixels[:, c1] * w)
        top, bottom = rows
        w = wr[band].view(-1, *([1] * (top.ndim - 1)))
        bands.append((top * (1.0 - w) + bottom * w).float())
    return torch.cat(bands)


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped at the borders, of an h x w x c tensor."""
    for axis in (0, 1):
        n = x.shape[axis]
        zero = torch.zeros_like(x.narrow(axis, 0, 1))
        csum = torch.cat([zero, torch.cumsum(x, axis)], axis)
        positions = torch.arange(n, device=x.device)
        hi = (positions + radius + 1).clamp(max=n)
        lo = (positions - radius).clamp(min=0)
        count = (hi - lo).to(x.dtype).view((-1, 1, 1) if axis == 0 else (1, -1, 1))
        x = (csum.index_select(axis, hi) - csum.index_select(axis, lo)) / count
    return x


def _guided_maps(ab: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """The grid maps of guided upsampling: h x w x (ab, slope of ab on L/100, L/100), float64.

    As :func:`ddcolor.transforms._guided_maps`, with the four window means of the least-squares
    fit (L, ab, L*ab, L*L) taken in one pass over the stacked channels.
    """
    g = divide(guide.double()[..., None], 100.0)
    p = ab.double()
    means = _box_mean(torch.cat([g, p, g * p, g * g], dim=2), GUIDED_RADIUS)
    mean_g, mean_p, mean_gp, mean_gg = torch.split(means, [1, 2, 2, 1], dim=2)
    fit = (mean_gp - mean_g * mean_p) / ((mean_gg - mean_g * mean_g) + GUIDED_EPS)
    return torch.cat([p, _box_mean(fit, GUIDED_RADIUS), g], dim=2)


def _weighted_taps(
    source: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, dim: int
) -> torch.Tensor:
    """Resample ``source`` along ``dim``: the sum over taps k of its slices at ``index[:, k]``
    times ``weights[:, k]``, products and sums each rounded in the source's dtype (as numpy
    rounds them)."""
    shape = [1] * source.ndim
    shape[dim] = -1
    total = source.index_select(dim, index[:, 0]) * weights[:, 0].view(shape)
    for k in range(1, index.shape[1]):
        total += source.index_select(dim, index[:, k]) * weights[:, k].view(shape)
    return total


class TensorAbUpsampler:
    """:class:`ddcolor.transforms.AbUpsampler` (same arguments) with tensors on one device.

    ``ab`` (hxwx2 float32) and ``guide`` (hxw float32, for ``"guided"``) are on the device
    the work is done on. The horizontal pass is done once, for network rows x full width;
    :meth:`rows` does the vertical pass of one band of rows.

    Raises:
        ValueError: If ``method`` is unknown, or ``"guided"`` lacks its guide.
    """

    def __init__(
        self,
        ab: torch.Tensor,
        shape: tuple[int, int],
        method: UpsampleMethod,
        *,
        guide: torch.Tensor | None = None,
    ) -> None:
        self.method = method = validate_upsample(method)
        device = ab.device
        (src_h, src_w), (height, width) = ab.shape[:2], shape
        grid = ab.float()
        if method == "nearest":
            rows, cols = (
                _nearest_index(src, dst)[:, None] for src, dst in ((src_h, height), (src_w, width))
            )
            row_weights, col_weights = np.ones(rows.shape), np.ones(cols.shape)
        else:
            if method == "guided":
                if guide is None:
                    raise ValueError("guided upsampling needs the L of the network input as guide")
                grid = _guided_maps(ab, guide).float()
            taps = "bicubic" if method == "bicubic" else "bilinear"
            rows, row_weights = _torch_taps(src_h, height, taps)
            cols, col_weights = _torch_taps(src_w, width, taps)
        self._rows, self._cols = (torch.from_numpy(i).to(device) for i in (rows, cols))
        self._row_weights, col_w = (
            torch.from_numpy(w.astype(np.float32)).to(device) for w in (row_weights, col_weights)
        )
        self._wide = _weighted_taps(grid, self._cols, col_w, dim=1)

    def rows(self, start: int, stop: int, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Upsample one band of rows: the vertical pass, and the L detail for ``"guided"``.

        Args:
            start: Its first row.
            stop: The row after its last.
            guide: Its full-resolution L, (stop-start)xW float32 on the device (``"guided"``).

        Returns:
            Its ab, (stop-start)xWx2 float32 on the device.

        Raises:
            ValueError: If ``"guided"`` is not given the band's L.
        """
        band = _weighted_taps(self._wide, self._rows[start:stop], self._row_weights[start:stop], 0)
        if self.method != "guided":
            return band
        if guide is None:
            raise ValueError("guided upsampling needs the full-resolution L of the band")
        ab, slope, coarse = torch.split(band, [2, 2, 1], dim=2)
        # The L detail bilinear L misses, times the local slope of ab on L.
        return ab + slope * (guide[..., None].float() * float(np.float32(0.01)) - coarse)
