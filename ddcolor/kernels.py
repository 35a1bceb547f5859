"""Linear layers and convolutions over NHWC activations, with their activation fused on the CPU.

Part of panchro's fast inference path for DDColor (Kang et al., "DDColor: Towards
Photo-Realistic Image Colorization via Dual Decoders", ICCV 2023; upstream
github.com/piddnad/DDColor, weights under the Apache-2.0 licence), see
:mod:`ddcolor.prepared`.

On the CPU, oneDNN (the ``mkldnn`` operators PyTorch's own compiler emits for frozen CPU
graphs) runs a linear layer or convolution together with what follows it: the bias, a
ReLU or GELU, a residual addition. Each saves one pass over the output, and ``addmm``'s
copy of the bias into the output before the product: a ConvNeXt block of the tiny model
on 64x64x192 features took 55-65 ms instead of 92-114 ms in bf16 (2 threads, a loaded
2-core AMD EPYC), the whole tiny network at 512 px 17 % less CPU time. Elsewhere (GPUs,
builds without oneDNN, dtypes it lacks on the processor, or :data:`FUSED` turned off) the
same results come from plain torch operators.
"""

from __future__ import annotations

import functools
import logging
from typing import cast

import torch
import torch.nn.functional as F

__all__ = ["FUSED", "conv_nhwc", "fused_available", "linear"]

logger = logging.getLogger(__name__)

#: Whether to use oneDNN's fused operators where they exist; off, every call runs plain torch
#: operators (the tests compare the two).
FUSED = True
#: Activations each path knows, by the name oneDNN gives them.
ACTIVATIONS = ("none", "relu", "gelu")


def fused_available(x: torch.Tensor) -> bool:
    """Say whether the fused oneDNN operators will run for a tensor.

    Args:
        x: An activation tensor.

    Returns:
        True on the CPU of a build with oneDNN, when :data:`FUSED` is on, for float32, and
        for bf16 where oneDNN supports it on this processor.
    """
    return FUSED and x.device.type == "cpu" and _fused_dtype(x.dtype)


@functools.cache
def _fused_dtype(dtype: torch.dtype) -> bool:
    if not (
        bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    ):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu_(x)
    if activation == "gelu":
        return F.gelu(x)
    return x


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    activation: str = "none",
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``activation(x W^T + b)``, or ``residual + x W^T + b``, over the last axis.

    Args:
        x: ``...xI`` activations.
        weight: ``OxI`` weight, same dtype as ``x``.
        bias: ``O`` bias, same dtype.
        activation: ``none``, ``relu`` or ``gelu`` (not with ``residual``).
        residual: ``...xO`` tensor added to the result.

    Returns:
        ``...xO`` in the dtype of ``x``.
    """
    assert activation in ACTIVATIONS and (residual is None or activation == "none")
    if fused_available(x):
        if residual is not None:
            fused = torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        else:
            fused = torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none")
        return cast(torch.Tensor, fused)
    out = F.linear(x, weight, bias)
    return out + residual if residual is not None else _activate(out, activation)


def conv_nhwc(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    activation: str = "none",
) -> torch.Tensor:
    """A convolution of ``BxHxWxC`` activations, followed by ``activation``.

    Args:
        x: ``BxHxWxC`` contiguous activations.
        weight: ``Ox(C/groups)xkxk`` weight in channels-last memory, same dtype as ``x``.
        bias: ``O`` bias or None.
        stride: Stride in pixels.
        padding: Zero padding in pixels on every side.
        groups: Channel groups.
        activation: ``none`` or ``relu``.

    Returns:
        ``BxH'xW'xO`` contiguous activations.
    """
    assert activation in ("none", "relu")
    nchw = x.permute(0, 3, 1, 2)  # a channels-last view: no copy
    if fused_available(x):
        out = cast(
            torch.Tensor,
            torch.ops.mkldnn._convolution_pointwise(
                nchw, weight, bias, [padding] * 2, [stride] * 2, [1, 1], groups, activation, [], ""
            ),
        )
    else:
        out = _activate(F.conv2d(nchw, weight, bias, stride, padding, 1, groups), activation)
    out = out.permute(0, 2, 3, 1)
    return out if out.is_contiguous() else out.contiguous()
