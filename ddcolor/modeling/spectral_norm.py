"""A 2-D convolution whose weight is divided by its largest singular value.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed).

Upstream wraps ``nn.Conv2d`` with ``torch.nn.utils.spectral_norm``, which stores the raw
weight as ``weight_orig`` and the power-iteration vectors as the buffers ``weight_u`` and
``weight_v``. This module keeps exactly those names, without forward hooks or the deprecated
API, so the official state dicts load with ``strict=True``.

In eval mode (inference) no power iteration runs: the stored vectors define
``sigma = u . (W v)`` with ``W`` the weight flattened to ``out x (in*kh*kw)``, and the
convolution uses ``weight_orig / sigma``. In training mode one power-iteration step updates
the vectors first, as ``torch.nn.utils.spectral_norm`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Epsilon (dimensionless) that keeps the vector normalisation away from zero division.
NORMALIZE_EPS = 1e-12
#: Power-iteration steps (count) run at construction so a random layer has a sane sigma.
INIT_POWER_ITERATIONS = 15


class SpectralNormConv2d(nn.Module):
    """``Conv2d`` with spectral normalisation, keyed like ``spectral_norm(nn.Conv2d(...))``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: Zero padding on every side.
        bias: Whether the convolution adds a per-channel bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.weight_orig = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        )
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.reset_parameters()

    weight_u: torch.Tensor
    weight_v: torch.Tensor

    def reset_parameters(self, weight: torch.Tensor | None = None) -> None:
        """Initialise the weight (He normal unless given), zero the bias, reset u and v.

        The singular vectors are re-estimated with a few power-iteration steps, so that even
        an untrained layer divides by roughly its largest singular value.

        Args:
            weight: Optional initial raw weight, shaped like ``weight_orig``.
        """
        if self.weight_orig.is_meta:
            # Built on the meta device only to learn shapes or to receive a checkpoint:
            # there is nothing to initialise, and power iteration on meta tensors costs
            # seconds through torch's decompositions.
            return
        with torch.no_grad():
            if weight is None:
                nn.init.kaiming_normal_(self.weight_orig)
            else:
                self.weight_orig.copy_(weight)
            if self.bias is not None:
                self.bias.zero_()
            matrix = self.weight_orig.flatten(1).float()
            u = F.normalize(torch.randn_like(self.weight_u, dtype=matrix.dtype), dim=0)
            v = F.normalize(torch.randn_like(self.weight_v, dtype=matrix.dtype), dim=0)
            for _ in range(INIT_POWER_ITERATIONS):
                v = F.normalize(torch.mv(matrix.t(), u), dim=0, eps=NORMALIZE_EPS)
                u = F.normalize(torch.mv(matrix, v), dim=0, eps=NORMALIZE_EPS)
            self.weight_u.copy_(u)
            self.weight_v.copy_(v)

    def normalized_weight(self) -> torch.Tensor:
        """Return ``weight_orig / sigma`` in the dtype of ``weight_orig``.

        sigma is computed in float32 with autocast off, whatever the module's dtype. In
        training mode one power-iteration step first updates ``weight_u`` and ``weight_v``.

        Returns:
            The normalised ``out x in x k x k`` weight.
        """
        weight = self.weight_orig
        with torch.autocast(device_type=weight.device.type, enabled=False):
            weight32 = weight.float()
            matrix = weight32.flatten(1)
            u = self.weight_u.float()
            v = self.weight_v.float()
            if self.training:
                with torch.no_grad():
                    v = F.normalize(torch.mv(matrix.t(), u), dim=0, eps=NORMALIZE_EPS)
                    u = F.normalize(torch.mv(matrix, v), dim=0, eps=NORMALIZE_EPS)
                    self.weight_u.copy_(u)
                    self.weight_v.copy_(v)
            sigma = torch.dot(u, torch.mv(matrix, v))
            return (weight32 / sigma).to(weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``BxCinxHxW`` features into ``BxCoutxH'xW'``.

        Args:
            x: ``BxCinxHxW`` input.

        Returns:
            ``BxCoutxH'xW'`` output.
        """
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        """Describe the layer for ``print(module)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
