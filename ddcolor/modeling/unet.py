"""Pixel decoder parts of DDColor: the pixel-shuffle upsampler and the wide U-Net block.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed). The blocks follow the fastai/DeOldify U-Net
design that DDColor's pixel decoder is built from.

Every convolution here is spectrally normalised. The upsampler is a 1x1 convolution to
``scale**2`` times the channels, ReLU, pixel shuffle, then a blur (replication pad of one
pixel on the top and left, 2x2 average pool with stride 1) that removes the checkerboard
pattern pixel shuffle leaves (Sugawara et al., "Super-resolution using convolutional neural
networks without any checkerboard artifacts", ICIP 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.modeling.spectral_norm import SpectralNormConv2d

#: Bias (dimensionless) given to the skip-connection batch norm of an untrained block.
SKIP_BN_INIT_BIAS = 1e-3
#: Replication padding (left, right, top, bottom), in pixels, applied before the blur.
BLUR_PADDING = (1, 0, 1, 0)
#: Side (pixels) of the average-pool window of the blur.
BLUR_KERNEL = 2


def icnr_weight(out_channels: int, in_channels: int, scale: int) -> torch.Tensor:
    """Return an ICNR-initialised 1x1 weight for a convolution followed by pixel shuffle.

    All ``scale**2`` sub-pixels of one output channel start with the same kernel, so the
    untrained upsampler behaves like nearest-neighbour upsampling (Aitken et al.,
    "Checkerboard artifact free sub-pixel convolution", 2017).

    Args:
        out_channels: Convolution outputs, a multiple of ``scale**2``.
        in_channels: Convolution inputs.
        scale: Pixel-shuffle factor.

    Returns:
        ``out_channels x in_channels x 1 x 1`` weight.
    """
    subpixels = scale * scale
    kernel = torch.empty(out_channels // subpixels, in_channels, 1, 1)
    nn.init.kaiming_normal_(kernel)
    return kernel.repeat_interleave(subpixels, dim=0)


class PixelShuffleUpsampler(nn.Module):
    """Upsample by ``scale`` with a spectral-norm 1x1 conv, ReLU, pixel shuffle and blur.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (after the shuffle).
        scale: Upsampling factor.
        blur: Whether to blur after the shuffle.
        batch_norm: Whether a batch norm follows the convolution (the convolution then has
            no bias); upstream uses it inside U-Net blocks, not in the final upsampler.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        scale: int = 2,
        blur: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        expanded = out_channels * scale * scale
        conv = SpectralNormConv2d(in_channels, expanded, 1, bias=not batch_norm)
        if not conv.weight_orig.is_meta:  # a meta build only learns shapes
            conv.reset_parameters(icnr_weight(expanded, in_channels, scale))
        layers: list[nn.Module] = [conv]
        if batch_norm:
            layers.append(nn.BatchNorm2d(expanded))
        self.conv = nn.Sequential(*layers)
        self.scale = scale
        self.blur = blur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``BxCinxHxW`` features to ``BxCoutx(H*scale)x(W*scale)``.

        Args:
            x: ``BxCinxHxW`` features.

        Returns:
            ``BxCoutx(H*scale)x(W*scale)`` features.
        """
        x = F.pixel_shuffle(F.relu(self.conv(x)), self.scale)
        if self.blur:
            x = F.avg_pool2d(F.pad(x, BLUR_PADDING, mode="replicate"), BLUR_KERNEL, stride=1)
        return x


class UnetBlockWide(nn.Module):
    """Upsample the deeper features 2x and fuse them with an encoder skip feature.

    ``out = conv(relu(cat(upsample(x), bn(skip))))`` where ``conv`` is a spectral-norm 3x3
    convolution, ReLU and batch norm.

    Args:
        in_channels: Channels of the deeper input.
        skip_channels: Channels of the encoder skip feature.
        out_channels: Channels of the output (and of the upsampled input).
        blur: Whether the upsampler blurs after pixel shuffle.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, *, blur: bool = True
    ) -> None:
        super().__init__()
        self.shuf = PixelShuffleUpsampler(
            in_channels, out_channels, scale=2, blur=blur, batch_norm=True
        )
        self.bn = nn.BatchNorm2d(skip_channels)
        with torch.no_grad():
            self.bn.bias.fill_(SKIP_BN_INIT_BIAS)
        self.conv = nn.Sequential(
            SpectralNormConv2d(
                out_channels + skip_channels, out_channels, 3, padding=1, bias=False
            ),
            nn.ReLU(),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Fuse ``BxCinxHxW`` features with a ``BxCskipx2Hx2W`` skip feature.

        Args:
            x: ``BxCinxHxW`` deeper features.
            skip: ``BxCskipx2Hx2W`` encoder features at twice the resolution.

        Returns:
            ``BxCoutx2Hx2W`` features.
        """
        fused = F.relu(torch.cat([self.shuf(x), self.bn(skip)], dim=1))
        out: torch.Tensor = self.conv(fused)
        return out
