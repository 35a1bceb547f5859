"""Resampling of the DDColor inference pipeline: the network input and the ab upsampling.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023, arXiv:2212.11613; code at https://github.com/piddnad/DDColor under Apache-2.0, the
licence under which the authors also publish the checkpoints). :func:`resize_bilinear` is
OpenCV's INTER_LINEAR, which makes the network input; :class:`AbUpsampler` brings the predicted
ab back to full resolution one band of rows at a time, by ``"nearest"`` (the published
pipeline's ``F.interpolate`` default, bit for bit), ``"bilinear"``, ``"bicubic"`` (PyTorch's,
align_corners=False) or ``"guided"``. Guided upsampling fits the guided filter's local linear
models of ab on L on the grid (He et al., "Guided Image Filtering", TPAMI 2013; He and Sun,
arXiv:1505.00996) and adds to bilinear ab the slope times the L detail that bilinear L misses:
colour edges follow the full-resolution L. docs/upsampling.md measures the four. The colour
conversions live in :mod:`ddcolor.colorspace`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ddcolor.colorspace import FloatArray, band_rows, to_unit_float
from ddcolor.registry import DEFAULT_UPSAMPLE, UpsampleMethod, validate_upsample

logger = logging.getLogger(__name__)

#: numpy's float32, the dtype of every array computed here.
_F32 = np.float32


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis.

    Returns:
        (i0, i1, w1) for dst samples: value = (1 - w1) * src[i0] + w1 * src[i1].
    """
    scale = 1.0 / (dst / src)
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(_F32)
    i0 = np.floor(pos).astype(np.int64)
    w1 = (pos - i0.astype(_F32)).astype(np.float64)
    outside = (i0 < 0) | (i0 >= src - 1)
    w1[outside] = 0.0
    i0 = np.clip(i0, 0, src - 1)
    return i0, np.minimum(i0 + 1, src - 1), w1


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> FloatArray:
    """Resize like ``cv2.resize(img, (w, h))`` (INTER_LINEAR, no antialiasing) to float32.

    Only the two source rows around each output row are read and converted, a band of output
    rows at a time, so memory stays small whatever the image size. The result matches OpenCV
    to within one float32 step (OpenCV rounds after each of its two passes; this computes in
    float64 and rounds once).

    Args:
        image: HxW or HxWxC, uint8/uint16 (scaled to [0, 1] first) or float.
        size: Output (height, width).

    Returns:
        hxw or hxwxC float32.
    """
    height, width = size
    r0, r1, wr = _linear_taps(image.shape[0], height)
    c0, c1, wc = _linear_taps(image.shape[1], width)
    extra = (None,) * (image.ndim - 2)
    wc_ = wc[(None, slice(None), *extra)]
    wr_ = wr[(slice(None), None, *extra)]
    resized = np.empty((height, width) + image.shape[2:], dtype=_F32)
    step = band_rows(max(width, image.shape[1]))
    for start in range(0, height, step):
        band = slice(start, start + step)
        top, bottom = (to_unit_float(image[r[band]]).astype(np.float64) for r in (r0, r1))
        top = top[:, c0] * (1.0 - wc_) + top[:, c1] * wc_
        bottom = bottom[:, c0] * (1.0 - wc_) + bottom[:, c1] * wc_
        resized[band] = top * (1.0 - wr_[band]) + bottom * wr_[band]
    return resized


#: Radius of the guided filter's box window, in pixels of the network's grid (from the
#: benchmark in docs/upsampling.md: larger radii blur colour edges).
GUIDED_RADIUS = 1
#: Regularisation of the guided filter's slope, in (L/100)^2 units: windows whose L varies by
#: much less than sqrt(eps) * 100 = 3 L get almost no L detail, which keeps film grain out
#: of the colour.
GUIDED_EPS = 1e-3
#: Weight of PyTorch's bicubic kernel (Keys' a), unitless.
_CUBIC_A = -0.75


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each output position, taken from ``F.interpolate(mode="nearest")`` itself."""
    ramp = torch.arange(src, dtype=torch.float64).view(1, 1, src, 1)
    out = F.interpolate(ramp, size=(dst, 1), mode="nearest")
    return out.view(dst).numpy().astype(np.int64)


def _torch_taps(src: int, dst: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (dst x k) of PyTorch's bilinear or bicubic, align_corners=False."""
    # PyTorch's vectorised CPU kernels fuse this multiply-add: one rounding to float32.
    scale = float(_F32(src) / _F32(dst))
    pos = (scale * (np.arange(dst, dtype=np.float64) + 0.5) - 0.5).astype(_F32)
    if method == "bilinear":
        pos = np.maximum(pos, _F32(0))
        i0 = pos.astype(np.int64)
        t = (pos - i0.astype(_F32)).astype(np.float64)
        return np.stack([i0, i0 + (i0 < src - 1)], 1), np.stack([1.0 - t, t], 1)
    i0 = np.floor(pos).astype(np.int64)
    t = (pos - i0.astype(_F32)).astype(np.float64)
    a = _CUBIC_A
    near = [t, 1.0 - t]  # distances to the two inner taps
    far = [1.0 + t, 2.0 - t]
    w_near = [((a + 2) * d - (a + 3)) * d * d + 1 for d in near]
    w_far = [((a * d - 5 * a) * d + 8 * a) * d - 4 * a for d in far]
    index = np.clip(i0[:, None] + np.arange(-1, 3), 0, src - 1)
    return index, np.stack([w_far[0], w_near[0], w_near[1], w_far[1]], 1)


def _box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window clipped at the borders, of an h x w array, by cumsums."""
    for axis in (0, 1):
        n = x.shape[axis]
        csum = np.concatenate([np.zeros_like(x.take([0], axis)), np.cumsum(x, axis)], axis)
        hi = np.minimum(np.arange(n) + radius + 1, n)
        lo = np.maximum(np.arange(n) - radius, 0)
        count = (hi - lo).reshape((-1, 1) if axis == 0 else (1, -1))
        x = (csum.take(hi, axis) - csum.take(lo, axis)) / count
    return x


def _guided_maps(ab: np.ndarray, guide: np.ndarray) -> list[np.ndarray]:
    """The grid maps guided upsampling interpolates: a, b, their slopes on L/100, and L/100.

    The slope is the guided filter's: the least-squares fit ab = A * L/100 + B over each
    (2r+1)^2 window, regularised by :data:`GUIDED_EPS`, averaged over the windows covering a
    pixel. Each map is an h x w float64 plane.
    """
    g = guide.astype(np.float64) / 100.0
    mean_g = _box_mean(g, GUIDED_RADIUS)
    var = _box_mean(g * g, GUIDED_RADIUS) - mean_g * mean_g
    planes = [ab[..., k].astype(np.float64) for k in range(ab.shape[-1])]
    slopes = []
    for p in planes:
        cov = _box_mean(g * p, GUIDED_RADIUS) - mean_g * _box_mean(p, GUIDED_RADIUS)
        slopes.append(_box_mean(cov / (var + GUIDED_EPS), GUIDED_RADIUS))
    return [*planes, *slopes, g]


class AbUpsampler:
    """Bring an ab prediction on the network's grid to full resolution, one band of rows at a time.

    The horizontal pass is done once (network rows x full width); each call to :meth:`rows`
    does the vertical pass for its band only, so a 100-megapixel scan needs memory for the
    output, not for full-resolution ab. ``"guided"`` computes, per full-resolution pixel,
    ``ab = up(ab_grid) + up(slope) * (L - up(L_grid)) / 100`` with bilinear ``up``. Every map
    is held and computed as a plane of its own (h x W): numpy's loops over an interleaved
    last axis of 2 or 5 values are several times slower.

    Args:
        ab: hxwx2 float32 ab predicted on the network's grid.
        shape: Full-resolution (H, W).
        method: One of :data:`ddcolor.registry.UPSAMPLE_METHODS`.
        guide: hxw float32 L of the network input; required by ``"guided"``.

    Raises:
        ValueError: If ``method`` is unknown, or ``"guided"`` lacks its guide.
    """

    def __init__(
        self,
        ab: np.ndarray,
        shape: tuple[int, int],
        method: UpsampleMethod = DEFAULT_UPSAMPLE,
        *,
        guide: np.ndarray | None = None,
    ) -> None:
        self.method = method = validate_upsample(method)
        self.shape = shape
        src_h, src_w = ab.shape[:2]
        height, width = shape
        grid = [ab[..., k] for k in range(ab.shape[-1])]
        if method == "nearest":
            self._rows = _nearest_index(src_h, height)[:, None]
            self._row_weights = np.ones((height, 1))
            cols = _nearest_index(src_w, width)
            self._wide = [plane[:, cols].astype(_F32) for plane in grid]
            return
        if method == "guided":
            if guide is None:
                raise ValueError("guided upsampling needs the L of the network input as guide")
            grid = _guided_maps(ab, guide)
        taps = "bicubic" if method == "bicubic" else "bilinear"
        self._rows, self._row_weights = _torch_taps(src_h, height, taps)
        cols, col_weights = _torch_taps(src_w, width, taps)
        col_weights = col_weights.astype(_F32)
        self._wide = []
        for plane in grid:
            plane = plane.astype(_F32)
            wide = plane[:, cols[:, 0]] * col_weights[None, :, 0]
            for k in range(1, cols.shape[1]):
                wide += plane[:, cols[:, k]] * col_weights[None, :, k]
            self._wide.append(wide)
        self._row_weights = self._row_weights.astype(_F32)

    def rows(self, start: int, stop: int, guide: np.ndarray | None = None) -> FloatArray:
        """Full-resolution ab of rows ``start:stop``, (stop-start)xWx2 float32.

        The two :meth:`planes` stacked; the arguments and errors are theirs.
        """
        return np.stack(self.planes(start, stop, guide), axis=-1)

    def planes(self, start: int, stop: int, guide: np.ndarray | None = None) -> list[FloatArray]:
        """Full-resolution a and b of rows ``start:stop``, as two planes.

        Args:
            start: First row.
            stop: Row after the last.
            guide: (stop-start)xW float32 full-resolution L of those rows; required by
                ``"guided"``.

        Returns:
            Two (stop-start)xW float32 planes, a and b.

        Raises:
            ValueError: If ``"guided"`` lacks its guide.
        """
        index, weights = self._rows[start:stop], self._row_weights[start:stop]
        if self.method == "nearest":
            return [wide[index[:, 0]] for wide in self._wide]
        bands = []
        for wide in self._wide:
            band = wide[index[:, 0]] * weights[:, 0, None]
            for k in range(1, index.shape[1]):
                band += wide[index[:, k]] * weights[:, k, None]
            bands.append(band)
        if self.method != "guided":
            return bands
        if guide is None:
            raise ValueError("guided upsampling needs the full-resolution L of the band")
        a, b, slope_a, slope_b, light = bands
        detail = guide.astype(_F32) * _F32(0.01) - light
        slope_a *= detail
        slope_b *= detail
        a += slope_a
        b += slope_b
        return [a, b]
