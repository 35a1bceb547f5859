"""Colour conversions of the DDColor inference pipeline: RGB <-> CIE Lab, and L alone.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023, arXiv:2212.11613; code at https://github.com/piddnad/DDColor under Apache-2.0, the
licence under which the authors also publish the checkpoints) predicts the a*b* channels of CIE
Lab. The published pipeline builds the network input and joins its output with OpenCV's float32
Lab conversions; this module computes them without OpenCV, in two flavours:

``"opencv"``
    OpenCV's own arithmetic. RGB -> Lab on float32 sRGB does not evaluate the formula: it
    interpolates trilinearly in a 33x33x33 table of int16 Lab values, with 16 steps per cell,
    so its L takes only 513 values along the grey axis (up to 0.25 L from the formula). Lab ->
    RGB evaluates the formula in float32 and reads the sRGB gamma from a 1024-entry cubic
    spline. Reproducing both keeps 8-bit results equal to the published pipeline's.
``"exact"``
    The CIE formulas in float64, with the same D65 white and matrices. Used for 16-bit images,
    whose L would otherwise lose precision in OpenCV's table.

Lab arrays are "HxWx3 float32 Lab" with L in [0, 100]; RGB arrays are "HxWx3 float32 RGB" in
[0, 1]. Resampling lives in :mod:`ddcolor.transforms`.
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

ColorMath = Literal["opencv", "exact"]

#: Colour arithmetic choices, see the module docstring.
COLOR_MATHS: tuple[ColorMath, ...] = ("opencv", "exact")

#: D65 reference white (X, Y, Z) used by OpenCV's Lab conversions, unitless.
_D65 = np.array([0.950456, 1.0, 1.088754])
#: Linear sRGB -> CIE XYZ (D65) as OpenCV stores it; rows X, Y, Z; unitless.
_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
#: CIE XYZ -> linear sRGB as OpenCV stores it (rounded, not the exact inverse); unitless.
_XYZ_TO_RGB = np.array(
    [
        [3.240479, -1.53715, -0.498535],
        [-0.969256, 1.875991, 0.041556],
        [0.055648, -0.204043, 1.057311],
    ]
)
#: Lab's linear-segment threshold on Y/Yn, (6/29)^3, unitless.
_EPSILON = 216.0 / 24389.0
#: Lab's linear-segment slope on L, (29/3)^3, L units per unit Y/Yn.
_KAPPA = 24389.0 / 27.0
#: Slope of f(t) on the linear segment, (29/3)^3/116, unitless.
_F_SLOPE = 841.0 / 108.0
#: Nodes per axis of OpenCV's RGB -> Lab table, count.
_LUT_DIM = 33
#: OpenCV's fixed-point scale of RGB input and of the table's Lab values, 2**14 units per 1.0.
_LAB_BASE = 1 << 14
#: Cells of one gamma spline table (OpenCV's GAMMA_TAB_SIZE), count.
_GAMMA_TAB_SIZE = 1024
#: Pixels converted per step by the band-wise functions, count: bounds their temporary arrays
#: to a few megabytes whatever the image size, so that a band's planes stay in the processor's
#: caches between the dozens of numpy operations run on them (docs/performance.md: with 2**20
#: pixels, composing a 3-megapixel scan took about twice as long).
BAND_PIXELS = 1 << 18

_F32 = np.float32
FloatArray = npt.NDArray[np.float32]


def band_rows(width: int) -> int:
    """Rows per band for images ``width`` pixels wide, see :data:`BAND_PIXELS`.

    Args:
        width: Image width in pixels.

    Returns:
        At least 1.
    """
    return max(1, BAND_PIXELS // max(width, 1))


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """Decode sRGB gamma, in float64."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Encode sRGB gamma, in float64."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(
        c <= 0.0031308, c * 12.92, 1.055 * np.power(np.maximum(c, 0.0), 1 / 2.4) - 0.055
    )


#: Turkowski's rational approximation of the cube root on [1/8, 1): numerator and denominator
#: coefficients, highest power first, as OpenCV's software float evaluates them; unitless.
_CBRT_NUM = (
    45.2548339756803022511987494,
    192.2798368355061050458134625,
    119.1654824285581628956914143,
    13.43250139086239872172837314,
    0.1636161226585754240958355063,
)
_CBRT_DEN = (
    14.80884093219134573786480845,
    151.9714051044435648658557668,
    168.5254414101568283957668343,
    33.9905941350215598754191872,
    1.0,
)


def _opencv_cbrt(x: np.ndarray) -> np.ndarray:
    """Cube root of positive float32 values the way OpenCV's table builder takes it.

    The exponent is split into a multiple of three and a mantissa in [1/8, 1), whose cube root
    comes from a rational approximation in float64; the result is truncated (not rounded) to
    float32. A correctly rounded cube root would change 70 of the 107,811 entries by one.
    """
    mant, exp = np.frexp(np.maximum(x, np.finfo(_F32).tiny).astype(np.float64))
    unbiased = exp - 1  # x = (2 * mant) * 2**unbiased with 2 * mant in [1, 2)
    shift = np.fmod(unbiased, 3)
    shift = np.where(shift >= 0, shift - 3, shift)
    frac = 2.0 * mant * np.exp2(shift)
    num = np.zeros_like(frac)
    den = np.zeros_like(frac)
    for cn, cd in zip(_CBRT_NUM, _CBRT_DEN, strict=True):
        num = num * frac + cn
        den = den * frac + cd
    root_mant, _ = np.frexp(num / den)
    bits = (2.0 * root_mant).view(np.uint64) & ~np.uint64((1 << 29) - 1)
    scale = np.exp2((unbiased - shift) // 3 - 1).astype(_F32)
    root: np.ndarray = bits.view(np.float64).astype(_F32) * scale
    return root


def _lab_f(t: np.ndarray) -> np.ndarray:
    """CIE f(t) of the Lab definition, in float64."""
    return np.where(t > _EPSILON, np.cbrt(t), t * _F_SLOPE + 16.0 / 116.0)


@functools.cache
def _opencv_rgb_to_lab_table() -> np.ndarray:
    """OpenCV's 33^3 RGB -> Lab table as int32, indexed [blue, green, red, (L, a, b)].

    Each node is computed the way OpenCV's table builder does, in float32 steps, and stored
    as L * 2**14 / 100 and (a + 128) * 2**14 / 256, rounded half to even.
    """
    nodes = np.arange(_LUT_DIM, dtype=_F32) / _F32(_LUT_DIM - 1)
    lin = _srgb_to_linear(nodes).astype(_F32)
    blue, green, red = lin[:, None, None], lin[None, :, None], lin[None, None, :]
    coeffs = (_RGB_TO_XYZ / _D65[:, None]).astype(_F32)
    eps, slope, bias = _F32(216) / _F32(24389), _F32(841) / _F32(108), _F32(16) / _F32(116)
    fxyz = []
    for row in coeffs:
        t = (blue * row[2] + green * row[1]) + red * row[0]
        linear = (t.astype(np.float64) * slope + bias).astype(_F32)
        fxyz.append((np.where(t > eps, _opencv_cbrt(t), linear), t))
    (fx, _), (fy, y), (fz, _) = fxyz
    light = np.where(y > eps, _F32(116) * fy - _F32(16), (_F32(24389) / _F32(27)) * y)
    a = _F32(500) * (fx - fy)
    b = _F32(200) * (fy - fz)
    base = _F32(_LAB_BASE)
    table = np.stack(
        [
            np.rint((base * light) / _F32(100)),
            np.rint((base * (a + _F32(128))) / _F32(256)),
            np.rint((base * (b + _F32(128))) / _F32(256)),
        ],
        axis=-1,
    )
    return table.astype(np.int32)


def _opencv_lab_of_fixed(fixed: np.ndarray) -> FloatArray:
    """Lab of RGB in OpenCV's fixed point (...x3 int32 in [0, 2**14]): trilinear, 16 steps a cell.

    Each channel is gathered from its own flat table, indexed (b*33 + g)*33 + r, plane by
    plane; the sums are integers, so the order they are taken in changes nothing.
    """
    tables = [_opencv_rgb_to_lab_table()[..., k].ravel() for k in range(3)]
    cell = fixed >> 9  # 2**14 / (33 - 1) = 2**9 fixed-point units per cell
    frac = (fixed >> 5) & 15  # 4-bit position inside the cell
    cb, cg, cr = (cell[..., k] for k in (2, 1, 0))
    fb, fg, fr = (frac[..., k] for k in (2, 1, 0))
    acc = [np.zeros(fixed.shape[:-1], dtype=np.int32) for _ in range(3)]
    for db in (0, 1):
        wb = fb if db else 16 - fb
        ib = np.minimum(cb + db, _LUT_DIM - 1) * _LUT_DIM
        for dg in (0, 1):
            wbg = wb * (fg if dg else 16 - fg)
            ibg = (ib + np.minimum(cg + dg, _LUT_DIM - 1)) * _LUT_DIM
            for dr in (0, 1):
                weight = wbg * (fr if dr else 16 - fr)
                index = ibg + np.minimum(cr + dr, _LUT_DIM - 1)
                for total, table in zip(acc, tables, strict=True):
                    total += table.take(index) * weight
    lab = np.empty(fixed.shape, dtype=_F32)
    lab[..., 0] = ((acc[0] + 2048) >> 12).astype(_F32) * _F32(100.0 / _LAB_BASE)
    for k in (1, 2):
        lab[..., k] = ((acc[k] + 2048) >> 12).astype(_F32) * _F32(256.0 / _LAB_BASE) - _F32(128)
    return lab


@functools.cache
def _opencv_grey_lab_table() -> FloatArray:
    """Lab of every grey RGB in OpenCV's fixed point, (2**14 + 1) x 3."""
    levels = np.arange(_LAB_BASE + 1, dtype=np.int32)
    return _opencv_lab_of_fixed(np.repeat(levels[:, None], 3, axis=1))


def _opencv_rgb_to_lab(rgb: np.ndarray) -> FloatArray:
    """RGB -> Lab by OpenCV's table: clip, quantise to 2**14, trilinear with 16 steps per cell.

    Grey pixels (the three channels equal after quantising: every network input) are looked
    up in a table of all 2**14 + 1 grey levels made by the same arithmetic.
    """
    fixed = np.rint(np.clip(rgb, 0.0, 1.0, dtype=_F32) * _F32(_LAB_BASE)).astype(np.int32)
    red = fixed[..., 0]
    if np.array_equal(red, fixed[..., 1]) and np.array_equal(red, fixed[..., 2]):
        grey: FloatArray = _opencv_grey_lab_table()[red]
        return grey
    return _opencv_lab_of_fixed(fixed)


def _spline_table(values: np.ndarray) -> np.ndarray:
    """Natural cubic spline through ``values`` at 0..n, as OpenCV builds it in float32.

    Returns:
        n x 4 float32 polynomial coefficients (c0, c1, c2, c3) per cell.
    """
    f = values.astype(_F32)
    n = len(f) - 1
    diag, rhs = np.zeros(n, _F32), np.zeros(n, _F32)
    for i in range(1, n):
        t = (f[i + 1] - f[i] * _F32(2) + f[i - 1]) * _F32(3)
        diag[i] = _F32(1) / (_F32(4) - diag[i - 1])
        rhs[i] = (t - rhs[i - 1]) * diag[i]
    tab = np.empty((n, 4), _F32)
    c_next = _F32(0)
    for i in range(n - 1, -1, -1):
        c = rhs[i] - diag[i] * c_next
        tab[i] = (
            f[i],
            f[i + 1] - f[i] - (c_next + c * _F32(2)) / _F32(3),
            c,
            (c_next - c) / _F32(3),
        )
        c_next = c
    return tab


@functools.cache
def _opencv_inverse_gamma_spline() -> np.ndarray:
    """OpenCV's 1024-cell spline of the sRGB encoding curve on [0, 1]."""
    x = np.arange(_GAMMA_TAB_SIZE + 1, dtype=_F32) * (_F32(1) / _F32(_GAMMA_TAB_SIZE))
    return _spline_table(_linear_to_srgb(x))


def _opencv_lab_planes(
    light: np.ndarray, a: np.ndarray, b: np.ndarray, *, vector: bool = True
) -> list[FloatArray]:
    """Lab -> RGB planes in OpenCV's float32 arithmetic, operation for operation.

    OpenCV converts each row with 128-bit SIMD, 8 pixels at a time (multiplying by
    reciprocals, multiply-add unfused), and the last ``width % 8`` pixels of a row with scalar
    code (dividing); ``vector`` picks which of the two orders to follow. Each channel is a
    contiguous plane: numpy's loops over an interleaved last axis of 3 are several times
    slower.
    """
    light, a, b = (np.asarray(c, dtype=_F32) for c in (light, a, b))
    one = _F32(1)
    bias = _F32(16.0) / _F32(116.0)
    low = light <= _F32(8)
    if vector:
        y_low = light * (one / _F32(903.3))
        fy_high = (light + _F32(16)) * (one / _F32(116))
        f_xz = (a * (one / _F32(500)), b * (-one / _F32(200)))
    else:
        y_low = light / _F32(903.3)
        fy_high = (light + _F32(16)) / _F32(116)
        f_xz = (a / _F32(500), -(b / _F32(200)))
    y = np.where(low, y_low, fy_high * fy_high * fy_high)
    fy = np.where(low, _F32(7.787) * y_low + bias, fy_high)
    xz = []
    for f in (f_xz[0] + fy, f_xz[1] + fy):
        linear = (f - bias) * (one / _F32(7.787)) if vector else (f - bias) / _F32(7.787)
        xz.append(np.where(f <= _F32(6) / _F32(29), linear, f * f * f))
    x, z = xz
    coeffs = (_XYZ_TO_RGB * _D65[None, :]).astype(_F32)
    c_0, c_1, c_2, c_3 = np.ascontiguousarray(_opencv_inverse_gamma_spline().T)
    planes = []
    for c0, c1, c2 in coeffs:
        v = c0 * x + (c1 * y + c2 * z) if vector else (c0 * x + c1 * y) + c2 * z
        np.clip(v, _F32(0), one, out=v)
        v *= _F32(_GAMMA_TAB_SIZE)
        cell = np.minimum(v.astype(np.int32), _GAMMA_TAB_SIZE - 1)
        t = v - cell.astype(_F32)
        rgb = c_3.take(cell)
        for column in (c_2, c_1, c_0):
            rgb *= t
            rgb += column.take(cell)
        planes.append(rgb)
    return planes


def _exact_rgb_to_lab(rgb: np.ndarray) -> FloatArray:
    """RGB -> Lab by the CIE formulas in float64 (input clipped to [0, 1] as OpenCV does)."""
    lin = _srgb_to_linear(np.clip(rgb, 0.0, 1.0))
    xyz = lin @ (_RGB_TO_XYZ / _D65[:, None]).T
    f = _lab_f(xyz)
    lab = np.empty(rgb.shape, dtype=_F32)
    y = xyz[..., 1]
    lab[..., 0] = np.where(y > _EPSILON, 116.0 * f[..., 1] - 16.0, _KAPPA * y)
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def _exact_lab_to_rgb(lab: np.ndarray) -> FloatArray:
    """Lab -> RGB by the CIE formulas in float64, clipped to [0, 1]."""
    lab = np.asarray(lab, dtype=np.float64)
    light = lab[..., 0]
    fy = (light + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f**3, (f - 16.0 / 116.0) / _F_SLOPE)
    xyz[..., 1] = np.where(light > 8.0, xyz[..., 1], light / _KAPPA)
    lin = (xyz * _D65) @ _XYZ_TO_RGB.T
    return _linear_to_srgb(np.clip(lin, 0.0, 1.0)).astype(_F32)


def rgb_to_lab(rgb: np.ndarray, *, math: ColorMath = "opencv") -> FloatArray:
    """Convert sRGB to CIE Lab (D65), like ``cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)`` on float32.

    Args:
        rgb: HxWx3 (or ...x3) float RGB in [0, 1]; values outside are clipped.
        math: ``"opencv"`` for OpenCV's table arithmetic, ``"exact"`` for the formulas.

    Returns:
        Array of the same shape, float32 Lab with L in [0, 100].

    Raises:
        ValueError: If the last axis is not 3 or ``math`` is unknown.
    """
    _check_channels(rgb)
    if math == "opencv":
        return _opencv_rgb_to_lab(rgb)
    if math == "exact":
        return _exact_rgb_to_lab(rgb)
    raise ValueError(f"unknown colour math {math!r}; expected one of {COLOR_MATHS}")


def lab_to_rgb(lab: np.ndarray, *, math: ColorMath = "opencv") -> FloatArray:
    """Convert CIE Lab (D65) to sRGB clipped to [0, 1], like ``cv2.COLOR_Lab2RGB`` on float32.

    Args:
        lab: HxWx3 (or ...x3) float Lab with L in [0, 100].
        math: ``"opencv"`` for OpenCV's float32 arithmetic and gamma spline, ``"exact"`` for
            the formulas.

    Returns:
        Array of the same shape, float32 RGB in [0, 1].

    Raises:
        ValueError: If the last axis is not 3 or ``math`` is unknown.
    """
    _check_channels(lab)
    if math == "exact":
        return _exact_lab_to_rgb(lab)
    return np.stack(lab_planes_to_rgb(lab[..., 0], lab[..., 1], lab[..., 2], math=math), -1)


def lab_planes_to_rgb(
    light: np.ndarray, a: np.ndarray, b: np.ndarray, *, math: ColorMath = "opencv"
) -> list[FloatArray]:
    """:func:`lab_to_rgb` on separate planes: the fast form for whole images.

    Args:
        light: HxW (or ...xW) float L in [0, 100].
        a: a, same shape.
        b: b, same shape.
        math: ``"opencv"`` or ``"exact"``, as for :func:`lab_to_rgb`.

    Returns:
        Three float32 planes of that shape, R, G and B in [0, 1].

    Raises:
        ValueError: If ``math`` is unknown.
    """
    if math == "exact":
        rgb = _exact_lab_to_rgb(np.stack([light, a, b], -1))
        return [rgb[..., k] for k in range(3)]
    if math != "opencv":
        raise ValueError(f"unknown colour math {math!r}; expected one of {COLOR_MATHS}")
    planes = _opencv_lab_planes(light, a, b)
    tail = np.shape(light)[-1] % 8 if np.ndim(light) >= 1 else 0
    if tail:
        ends = _opencv_lab_planes(light[..., -tail:], a[..., -tail:], b[..., -tail:], vector=False)
        for plane, end in zip(planes, ends, strict=True):
            plane[..., -tail:] = end
    return planes


def _check_channels(array: np.ndarray) -> None:
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"expected 3 channels in the last axis, got shape {array.shape}")


@functools.cache
def _unit_table(dtype: str) -> FloatArray:
    """Every value of an 8- or 16-bit type divided by its maximum, as the published pipeline does.

    The division happens in float64 and is then rounded to float32, as in
    ``(img / 255.0).astype(np.float32)``.
    """
    top = int(np.iinfo(np.dtype(dtype)).max)
    return (np.arange(top + 1, dtype=np.float64) / float(top)).astype(_F32)


def to_unit_float(image: np.ndarray) -> FloatArray:
    """Scale an 8- or 16-bit image to float32 in [0, 1] (float input is returned as float32).

    Args:
        image: Array of uint8, uint16 or floating dtype, any shape.

    Returns:
        float32 array of the same shape.

    Raises:
        TypeError: For integer dtypes other than uint8 and uint16.
    """
    if image.dtype in (np.uint8, np.uint16):
        unit: FloatArray = _unit_table(image.dtype.str)[image]
        return unit
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(_F32, copy=False)
    raise TypeError(f"expected uint8, uint16 or float pixels, got {image.dtype}")


@functools.cache
def _grey_lightness_table(dtype: str, math: ColorMath) -> FloatArray:
    """L of every grey level of an 8- or 16-bit type."""
    unit = _unit_table(dtype)
    return rgb_to_lab(np.repeat(unit[:, None], 3, axis=1), math=math)[:, 0].copy()


def lightness(image: np.ndarray, *, math: ColorMath = "opencv") -> FloatArray:
    """L of an image, computed in bands of rows; grey 8/16-bit images use a per-level table.

    Args:
        image: HxW grey or HxWx3 RGB, uint8, uint16 or float in [0, 1].
        math: Colour arithmetic, see :func:`rgb_to_lab`.

    Returns:
        HxW float32 L in [0, 100].

    Raises:
        ValueError: If the image is neither HxW nor HxWx3.
    """
    if image.ndim == 2 and image.dtype in (np.uint8, np.uint16):
        grey: FloatArray = _grey_lightness_table(image.dtype.str, math)[image]
        return grey
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    out = np.empty(image.shape[:2], dtype=_F32)
    step = band_rows(image.shape[1])
    for start in range(0, image.shape[0], step):
        band = to_unit_float(image[start : start + step])
        if band.ndim == 2:
            band = np.repeat(band[..., None], 3, axis=2)
        out[start : start + step] = rgb_to_lab(band, math=math)[..., 0]
    return out
