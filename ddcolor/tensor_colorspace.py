"""The colour conversions of :mod:`ddcolor.colorspace` as torch operations, on any device.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023, arXiv:2212.11613; code at https://github.com/piddnad/DDColor under Apache-2.0, the
licence under which the authors also publish the checkpoints) predicts the a*b* channels of CIE
Lab; the pipeline around it converts RGB to L and Lab back to RGB. On a GPU that work costs
more than the network itself when it runs in numpy on the host, so this module does it where
the network runs, with the arithmetic of :mod:`ddcolor.colorspace` operation for operation:

``"opencv"``
    L from OpenCV's 33x33x33 table in the same int32 fixed point; Lab -> RGB in float32 with
    the same products, sums and divisions in the same order (the 8-wide SIMD order, and the
    scalar order for the last ``width % 8`` pixels of a row) and the same gamma spline.
    Elementwise torch operations round once each, as numpy's do, so results are equal.
``"exact"``
    The CIE formulas in float64; the cube root and powers come from the device's maths
    library, so values may differ from numpy's in the last bits of a float64.

The tables (OpenCV's L table, the gamma spline, the unit scale and the L of every grey level)
are built once by :mod:`ddcolor.colorspace` and copied to each device once. Tensors here are
"...x3 float32 RGB" in [0, 1] and "... float32 L" in [0, 100], on any device.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from ddcolor.colorspace import (
    _D65,
    _EPSILON,
    _F_SLOPE,
    _GAMMA_TAB_SIZE,
    _KAPPA,
    _LAB_BASE,
    _LUT_DIM,
    _RGB_TO_XYZ,
    _XYZ_TO_RGB,
    COLOR_MATHS,
    ColorMath,
    _grey_lightness_table,
    _opencv_inverse_gamma_spline,
    _opencv_rgb_to_lab_table,
    _unit_table,
)

__all__ = [
    "device_table",
    "divide",
    "grey_lightness",
    "lab_to_rgb",
    "rgb_lightness",
    "unit_float",
]

logger = logging.getLogger(__name__)

_F32 = np.float32


def _f32(value: float | np.floating) -> float:
    """A value rounded to float32, as the Python float torch takes for a float32 scalar."""
    return float(_F32(value))


#: OpenCV's float32 constants of Lab -> RGB, each rounded as :mod:`ddcolor.colorspace` rounds it.
_BIAS = _f32(_F32(16.0) / _F32(116.0))
_INV_903 = _f32(_F32(1) / _F32(903.3))
_INV_116 = _f32(_F32(1) / _F32(116))
_INV_500 = _f32(_F32(1) / _F32(500))
_NEG_INV_200 = _f32(-_F32(1) / _F32(200))
_INV_7787 = _f32(_F32(1) / _F32(7.787))
_SIX_29 = _f32(_F32(6) / _F32(29))
#: L of OpenCV's table per fixed-point unit, float32.
_L_PER_UNIT = _f32(100.0 / _LAB_BASE)
#: Rows of XYZ -> linear RGB with the D65 white folded in, float32, as OpenCV stores them.
_OPENCV_RGB_ROWS = [[float(c) for c in row] for row in (_XYZ_TO_RGB * _D65[None, :]).astype(_F32)]
#: Y row of linear RGB -> XYZ over the white, float64.
_Y_ROW = [float(c) for c in _RGB_TO_XYZ[1] / _D65[1]]


@functools.cache
def device_table(name: str, device: torch.device, dtype: str = "", math: str = "") -> torch.Tensor:
    """A lookup table of :mod:`ddcolor.colorspace`, copied to a device once per process.

    Args:
        name: ``lut_l`` (OpenCV's table, L column, int32, flat), ``spline`` (1024x4 float32),
            ``unit`` (level / maximum, float32) or ``grey_l`` (L of each grey level, float32).
        device: Where the table is needed.
        dtype: numpy dtype string (``|u1``, ``<u2``) of ``unit`` and ``grey_l``.
        math: Colour arithmetic of ``grey_l``.

    Returns:
        The table on ``device``.

    Raises:
        ValueError: For an unknown name.
    """
    if name == "lut_l":
        values = np.ascontiguousarray(_opencv_rgb_to_lab_table()[..., 0].reshape(-1))
    elif name == "spline":
        values = _opencv_inverse_gamma_spline()
    elif name == "unit":
        values = _unit_table(dtype)
    elif name == "grey_l":
        values = _grey_lightness_table(dtype, math)
    else:
        raise ValueError(f"unknown table {name!r}")
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


def _check_math(math: str) -> None:
    if math not in COLOR_MATHS:
        raise ValueError(f"unknown colour math {math!r}; expected one of {COLOR_MATHS}")


def unit_float(levels: torch.Tensor, dtype: np.dtype[np.unsignedinteger]) -> torch.Tensor:
    """Scale 8- or 16-bit levels to float32 in [0, 1] as :func:`ddcolor.colorspace.to_unit_float`.

    Args:
        levels: int32 or int64 levels of any shape, from 0 to the dtype's maximum.
        dtype: The levels' image dtype, uint8 or uint16.

    Returns:
        float32 tensor of the same shape and device.
    """
    table = device_table("unit", levels.device, np.dtype(dtype).str)
    return table[levels]


def grey_lightness(
    levels: torch.Tensor, dtype: np.dtype[np.unsignedinteger], math: ColorMath
) -> torch.Tensor:
    """L of grey levels, from the same per-level table as :func:`ddcolor.colorspace.lightness`.

    Args:
        levels: int32 or int64 grey levels of any shape.
        dtype: Their image dtype, uint8 or uint16.
        math: Colour arithmetic.

    Returns:
        float32 L of the same shape and device.

    Raises:
        ValueError: If ``math`` is unknown.
    """
    _check_math(math)
    table = device_table("grey_l", levels.device, np.dtype(dtype).str, math)
    return table[levels]


def rgb_lightness(rgb: torch.Tensor, math: ColorMath) -> torch.Tensor:
    """L of RGB, as ``ddcolor.colorspace.rgb_to_lab(rgb, math=math)[..., 0]``.

    Args:
        rgb: ...x3 float32 RGB in [0, 1]; values outside are clipped.
        math: ``opencv`` (OpenCV's table, bit for bit) or ``exact`` (the formula in float64).

    Returns:
        ... float32 L in [0, 100], on the same device.

    Raises:
        ValueError: If ``math`` is unknown.
    """
    _check_math(math)
    if math == "exact":
        lin = _srgb_to_linear(rgb.double().clamp(0.0, 1.0))
        y = lin[..., 0] * _Y_ROW[0] + lin[..., 1] * _Y_ROW[1] + lin[..., 2] * _Y_ROW[2]
        cube_root = y.clamp(min=0.0).pow(1.0 / 3.0)
        return torch.where(y > _EPSILON, 116.0 * cube_root - 16.0, _KAPPA * y).float()
    table = device_table("lut_l", rgb.device)
    fixed = torch.round(rgb.float().clamp(0.0, 1.0) * float(_LAB_BASE)).to(torch.int32)
    cell = fixed >> 9  # 2**14 / (33 - 1) = 2**9 fixed-point units per cell
    frac = (fixed >> 5) & 15  # 4-bit position inside the cell
    top = _LUT_DIM - 1
    cr, cg, cb = cell.unbind(-1)
    fr, fg, fb = frac.unbind(-1)
    acc = torch.zeros_like(cr)
    for db in (0, 1):
        wb = fb if db else 16 - fb
        ib = (cb + db).clamp(max=top) * _LUT_DIM
        for dg in (0, 1):
            wbg = wb * (fg if dg else 16 - fg)
            ibg = (ib + (cg + dg).clamp(max=top)) * _LUT_DIM
            for dr in (0, 1):
                weight = wbg * (fr if dr else 16 - fr)
                acc += table[ibg + (cr + dr).clamp(max=top)] * weight
    return ((acc + 2048) >> 12).float() * _L_PER_UNIT


def lab_to_rgb(light: torch.Tensor, ab: torch.Tensor, math: ColorMath) -> torch.Tensor:
    """Lab -> RGB as :func:`ddcolor.colorspace.lab_to_rgb`, with L and ab given apart.

    Args:
        light: HxW (or ...xW) float32 L in [0, 100].
        ab: HxWx2 (or ...xWx2) float32 a and b.
        math: ``opencv`` (OpenCV's float32 order and gamma spline, the last ``W % 8``
            pixels of each row in its scalar order) or ``exact`` (the formulas in float64).

    Returns:
        HxWx3 float32 RGB in [0, 1], on the same device.

    Raises:
        ValueError: If ``math`` is unknown.
    """
    _check_math(math)
    if math == "exact":
        return _exact_lab_to_rgb(light, ab)
    rgb = _opencv_lab_to_rgb(light, ab, vector=True)
    tail = light.shape[-1] % 8 if light.ndim >= 1 else 0
    if tail:
        rgb[..., -tail:, :] = _opencv_lab_to_rgb(light[..., -tail:], ab[..., -tail:, :], False)
    return rgb


def _opencv_lab_to_rgb(light: torch.Tensor, ab: torch.Tensor, vector: bool) -> torch.Tensor:
    """OpenCV's float32 Lab -> RGB; see :func:`ddcolor.colorspace._opencv_lab_to_rgb`."""
    light, a, b = light.float(), ab[..., 0].float(), ab[..., 1].float()
    low = light <= 8.0
    if vector:
        y_low = light * _INV_903
        fy_high = (light + 16.0) * _INV_116
        f_xz = (a * _INV_500, b * _NEG_INV_200)
    else:
        y_low = divide(light, _f32(903.3))
        fy_high = divide(light + 16.0, 116.0)
        f_xz = (divide(a, 500.0), -divide(b, 200.0))
    y = torch.where(low, y_low, fy_high * fy_high * fy_high)
    fy = torch.where(low, y_low * _f32(7.787) + _BIAS, fy_high)
    xz = []
    for f_part in f_xz:
        f = f_part + fy
        linear = (f - _BIAS) * _INV_7787 if vector else divide(f - _BIAS, _f32(7.787))
        xz.append(torch.where(f <= _SIX_29, linear, f * f * f))
    x, z = xz
    spline = device_table("spline", light.device)
    channels = []
    for c0, c1, c2 in _OPENCV_RGB_ROWS:
        v = x * c0 + (y * c1 + z * c2) if vector else (x * c0 + y * c1) + z * c2
        v = v.clamp(0.0, 1.0) * float(_GAMMA_TAB_SIZE)
        cell = v.to(torch.int32).clamp(max=_GAMMA_TAB_SIZE - 1)
        t = v - cell.float()
        p = spline[cell]
        channels.append(((p[..., 3] * t + p[..., 2]) * t + p[..., 1]) * t + p[..., 0])
    return torch.stack(channels, dim=-1)


def divide(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """Divide by a number the way numpy does, on any device.

    CUDA kernels divide by a host scalar as a multiplication by its reciprocal, which can
    be one bit off; dividing by a tensor on ``x``'s device rounds the quotient once.

    Args:
        x: Floating tensor.
        divisor: The number, representable in ``x``'s dtype.

    Returns:
        ``x / divisor`` correctly rounded, of ``x``'s dtype.
    """
    return x / _device_scalar(divisor, x.dtype, x.device)


@functools.cache
def _device_scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """Decode sRGB gamma, in float64."""
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Encode sRGB gamma, in float64."""
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0).pow(1 / 2.4) - 0.055)


def _exact_lab_to_rgb(light: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Lab -> RGB by the CIE formulas in float64, clipped to [0, 1]."""
    light = light.double()
    fy = (light + 16.0) / 116.0
    fx = fy + ab[..., 0].double() / 500.0
    fz = fy - ab[..., 1].double() / 200.0
    xyz = []
    for k, f in enumerate((fx, fy, fz)):
        value = torch.where(f > 6.0 / 29.0, f**3, (f - 16.0 / 116.0) / _F_SLOPE)
        if k == 1:
            value = torch.where(light > 8.0, value, light / _KAPPA)
        xyz.append(value * float(_D65[k]))
    channels = []
    for row in _XYZ_TO_RGB:
        lin = xyz[0] * float(row[0]) + xyz[1] * float(row[1]) + xyz[2] * float(row[2])
        channels.append(_linear_to_srgb(lin.clamp(0.0, 1.0)).float())
    return torch.stack(channels, dim=-1)
