"""Layer normalisation that stays in float32 under reduced precision.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed).

Both modules keep the parameter names ``weight`` and ``bias`` of the upstream layers so the
official checkpoints load unchanged. The mean and variance are computed in float32 whatever
the input dtype and the result is cast back: in float16 the variance of wide activations
overflows or loses every significant bit, which turns whole feature maps into NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Epsilon (dimensionless) added to the variance by PyTorch's own nn.LayerNorm.
DEFAULT_EPS = 1e-5


class LayerNorm(nn.Module):
    """Layer norm over the last dimension, computed in float32.

    Drop-in replacement for ``nn.LayerNorm(num_features, eps)`` with the same state dict.

    Args:
        num_features: Size of the last dimension.
        eps: Added to the variance before the square root.
    """

    def __init__(self, num_features: int, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``...xC`` features over C.

        Args:
            x: Tensor whose last dimension has ``num_features`` entries, any float dtype.

        Returns:
            The normalised tensor, same shape and dtype as ``x``.
        """
        out = F.layer_norm(
            x.float(), (self.num_features,), self.weight.float(), self.bias.float(), self.eps
        )
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        """Describe the layer for ``print(module)``."""
        return f"{self.num_features}, eps={self.eps}"


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of ``BxCxHxW`` feature maps, computed in float32.

    Each pixel's C values are normalised with their own mean and (biased) variance, then
    scaled and shifted per channel, as ConvNeXt's "channels first" layer norm does.

    Args:
        num_channels: Number of channels C.
        eps: Added to the variance before the square root.
    """

    def __init__(self, num_channels: int, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``BxCxHxW`` features over C.

        Args:
            x: ``BxCxHxW`` tensor, any float dtype.

        Returns:
            The normalised ``BxCxHxW`` tensor in the dtype of ``x``.
        """
        x32 = x.float()
        mean = x32.mean(1, keepdim=True)
        centred = x32 - mean
        variance = centred.pow(2).mean(1, keepdim=True)
        normalised = centred / torch.sqrt(variance + self.eps)
        out = self.weight.float()[:, None, None] * normalised + self.bias.float()[:, None, None]
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        """Describe the layer for ``print(module)``."""
        return f"{self.num_channels}, eps={self.eps}"
