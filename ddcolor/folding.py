"""Weights of a trained DDColor folded for inference: affine layers merged into convolutions.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) carries
layers that in eval mode are fixed affine maps: batch norms, the ConvNeXt layer-scale
``gamma``, the ImageNet normalisation of the input, the spectral normalisation of the
decoder's convolutions (a division by a constant). Each is merged here, once, into the
weights of a neighbouring convolution or linear layer, so that a forward pass
(:mod:`ddcolor.prepared`) runs none of them. The algebra is exact; only float rounding
changes (about 1e-7 of the values in float32).

A :class:`Linear` is one 1x1 convolution or linear layer, ``y = x W^T + b`` over the last
(channel) axis; a :class:`Conv` is any other convolution. Both are float32 here;
:mod:`ddcolor.prepared` casts them to the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ddcolor.modeling.spectral_norm import SpectralNormConv2d

__all__ = ["Affine", "Conv", "Linear", "bn_affine", "conv_of", "linear_of"]


@dataclass(frozen=True)
class Affine:
    """A per-channel affine map ``x * scale + shift``.

    Attributes:
        scale: C float32.
        shift: C float32.
    """

    scale: torch.Tensor
    shift: torch.Tensor


@dataclass(frozen=True)
class Linear:
    """A linear map over channels: ``x W^T + b``.

    Attributes:
        weight: O x I float32.
        bias: O float32.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def after(self, affine: Affine) -> Linear:
        """This map applied to ``affine``'s output: the affine merged into the weights.

        Args:
            affine: The per-input-channel map that precedes this one.

        Returns:
            ``x -> self(affine(x))`` as one linear map.
        """
        return Linear(self.weight * affine.scale, self.bias + self.weight @ affine.shift)

    def then(self, affine: Affine) -> Linear:
        """``affine`` applied to this map's output, merged into the weights.

        Args:
            affine: The per-output-channel map that follows this one.

        Returns:
            ``x -> affine(self(x))`` as one linear map.
        """
        scale = affine.scale[:, None]
        return Linear(self.weight * scale, self.bias * affine.scale + affine.shift)


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution with its settings.

    Attributes:
        weight: O x (I/groups) x kh x kw float32.
        bias: O float32, or None.
        stride: Stride in pixels.
        padding: Zero padding in pixels on every side.
        groups: Channel groups.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int = 1
    padding: int = 0
    groups: int = 1


def bn_affine(bn: nn.BatchNorm2d) -> Affine:
    """The affine map an eval-mode batch norm applies.

    Args:
        bn: A batch norm with running statistics.

    Returns:
        Its scale and shift, float32.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    shift = bn.bias.detach().float() - bn.running_mean.float() * scale
    return Affine(scale, shift)


#: What :func:`linear_of` and :func:`conv_of` read.
Layer = nn.Linear | nn.Conv2d | SpectralNormConv2d


def _weight_and_bias(module: Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(module, SpectralNormConv2d):
        weight = module.normalized_weight()
    else:
        weight = module.weight
    bias = module.bias
    return weight.detach().float(), None if bias is None else bias.detach().float()


def linear_of(module: Layer) -> Linear:
    """A 1x1 convolution (plain or spectrally normalised) or ``nn.Linear`` as a :class:`Linear`.

    Args:
        module: ``nn.Linear``, ``nn.Conv2d`` or :class:`SpectralNormConv2d` with a 1x1 kernel.

    Returns:
        Its float32 weight (O x I) and bias (zeros where it has none).
    """
    weight, bias = _weight_and_bias(module)
    weight = weight.flatten(1)
    return Linear(weight, torch.zeros(weight.shape[0]) if bias is None else bias)


def conv_of(module: nn.Conv2d | SpectralNormConv2d) -> Conv:
    """A convolution (plain or spectrally normalised) as a :class:`Conv`.

    Args:
        module: A convolution with square strides and zero padding the same on every side.

    Returns:
        Its float32 weight and bias and its settings.
    """
    weight, bias = _weight_and_bias(module)
    if isinstance(module, SpectralNormConv2d):
        return Conv(weight, bias, stride=module.stride, padding=module.padding)
    padding = module.padding
    assert isinstance(padding, tuple), "string padding is not used by DDColor"
    return Conv(weight, bias, stride=module.stride[0], padding=padding[0], groups=module.groups)
