"""The DDColor network as plain PyTorch modules, one component per module.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence. Attribute names reproduce the official state dict keys.
"""

from __future__ import annotations

from ddcolor.modeling.color_decoder import MultiScaleColorDecoder
from ddcolor.modeling.convnext import ConvNeXt, ConvNeXtBlock
from ddcolor.modeling.ddcolor import DDColor, DualDecoder, ImageEncoder
from ddcolor.modeling.layer_norm import LayerNorm, LayerNorm2d
from ddcolor.modeling.spectral_norm import SpectralNormConv2d
from ddcolor.modeling.transformer import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    MultiHeadAttention,
    PositionEmbeddingSine,
    SelfAttentionLayer,
)
from ddcolor.modeling.unet import PixelShuffleUpsampler, UnetBlockWide

__all__ = [
    "MLP",
    "ConvNeXt",
    "ConvNeXtBlock",
    "CrossAttentionLayer",
    "DDColor",
    "DualDecoder",
    "FFNLayer",
    "ImageEncoder",
    "LayerNorm",
    "LayerNorm2d",
    "MultiHeadAttention",
    "MultiScaleColorDecoder",
    "PixelShuffleUpsampler",
    "PositionEmbeddingSine",
    "SelfAttentionLayer",
    "SpectralNormConv2d",
    "UnetBlockWide",
]
