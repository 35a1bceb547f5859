"""ConvNeXt encoder of DDColor, returning four normalised feature maps.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed). The encoder is ConvNeXt (Liu et al., "A ConvNet
for the 2020s", CVPR 2022): ConvNeXt-L for the released large models, ConvNeXt-T for the
tiny one.

DDColor adds a channels-first layer norm ``norm0`` .. ``norm3`` after each of the four
stages; their outputs (not the raw stage outputs) are what the decoder sees, while the next
stage continues from the un-normalised features. Upstream collects them with forward hooks;
here :meth:`ConvNeXt.forward` returns them. The classification-time final norm ``norm`` is
kept only so the checkpoints' keys match; it takes no part in colorization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddcolor.modeling.layer_norm import LayerNorm, LayerNorm2d

#: Epsilon (dimensionless) of every layer norm in the encoder.
CONVNEXT_LN_EPS = 1e-6
#: Initial value (dimensionless) of the per-channel layer-scale factors ``gamma``.
LAYER_SCALE_INIT = 1e-6
#: Standard deviation (dimensionless) of the truncated normal for untrained weights.
INIT_STD = 0.02
#: Width multiplier (ratio) of each block's inverted bottleneck.
MLP_RATIO = 4


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block: 7x7 depthwise conv, layer norm, inverted-bottleneck MLP, scale.

    The MLP runs channels-last with ``nn.Linear``; the residual branch is multiplied by the
    learnt per-channel ``gamma`` before it is added back.

    Args:
        dim: Channels of the block's input and output.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=CONVNEXT_LN_EPS)
        self.pwconv1 = nn.Linear(dim, MLP_RATIO * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(MLP_RATIO * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``BxCxHxW`` features.

        Args:
            x: ``BxCxHxW`` features.

        Returns:
            ``BxCxHxW`` features.
        """
        branch: torch.Tensor = self.dwconv(x).permute(0, 2, 3, 1)
        branch = self.pwconv2(self.act(self.pwconv1(self.norm(branch))))
        branch = (self.gamma * branch).permute(0, 3, 1, 2)
        return x + branch


class ConvNeXt(nn.Module):
    """ConvNeXt backbone that returns the normalised output of each of its four stages.

    Args:
        depths: Number of blocks in each of the four stages.
        dims: Channels of each of the four stages.
        in_channels: Channels of the input image.
    """

    def __init__(self, depths: Sequence[int], dims: Sequence[int], *, in_channels: int = 3) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt has four stages, got depths={depths} dims={dims}")
        self.depths = tuple(depths)
        self.dims = tuple(dims)
        # downsample_layers[0] is the 4x4 stride-4 stem; the other three halve the resolution
        # between stages, normalising first.
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
                    LayerNorm2d(dims[0], eps=CONVNEXT_LN_EPS),
                )
            ]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(dims[i], eps=CONVNEXT_LN_EPS),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for depth, dim in zip(depths, dims, strict=True)
        )
        self.norm0 = LayerNorm2d(dims[0], eps=CONVNEXT_LN_EPS)
        self.norm1 = LayerNorm2d(dims[1], eps=CONVNEXT_LN_EPS)
        self.norm2 = LayerNorm2d(dims[2], eps=CONVNEXT_LN_EPS)
        self.norm3 = LayerNorm2d(dims[3], eps=CONVNEXT_LN_EPS)
        self.norm = LayerNorm(dims[3], eps=CONVNEXT_LN_EPS)
        self.apply(_init_weights)

    def output_norms(self) -> list[LayerNorm2d]:
        """Return the four per-stage output norms, shallowest first."""
        return [self.norm0, self.norm1, self.norm2, self.norm3]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encode a ``Bx3xHxW`` image into four feature maps.

        Args:
            x: ``Bx3xHxW`` normalised image, H and W multiples of 32.

        Returns:
            Four normalised features, shallowest first: ``BxC0xH/4xW/4``,
            ``BxC1xH/8xW/8``, ``BxC2xH/16xW/16`` and ``BxC3xH/32xW/32`` with ``Ci = dims[i]``.
        """
        features = []
        for downsample, stage, norm in zip(
            self.downsample_layers, self.stages, self.output_norms(), strict=True
        ):
            x = stage(downsample(x))
            features.append(norm(x))
        return features


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
