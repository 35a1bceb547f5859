"""The DDColor network: ConvNeXt encoder, pixel decoder, colour decoder and refinement.

DDColor is described in Kang et al., "DDColor: Towards Photo-Realistic Image Colorization
via Dual Decoders", ICCV 2023; the upstream code and released weights are at
github.com/piddnad/DDColor (weights under the Apache-2.0 licence). This is an independent
implementation whose module attribute names reproduce the official state dict keys, so the
released checkpoints load with ``load_state_dict(..., strict=True)``.

Data flow for a ``Bx3xHxW`` image::

    x = (rgb - mean) / std                    ImageNet statistics, stored as buffers
    f0, f1, f2, f3 = encoder(x)               strides 4, 8, 16, 32 (norm0..norm3 outputs)
    s0 = layers[0](f3, skip=f2)               stride 16, nf channels
    s1 = layers[1](s0, skip=f1)               stride 8,  nf channels
    s2 = layers[2](s1, skip=f0)               stride 4,  nf/2 channels
    image = last_shuf(s2)                     stride 1,  nf/2 channels (4x pixel shuffle)
    colours = color_decoder([s0, s1, s2], image)          Q channels
    ab = refine_net(cat(colours, x))          1x1 conv on Q + 3 channels -> 2 channels
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddcolor.modeling.color_decoder import MultiScaleColorDecoder
from ddcolor.modeling.convnext import ConvNeXt
from ddcolor.modeling.spectral_norm import SpectralNormConv2d
from ddcolor.modeling.unet import PixelShuffleUpsampler, UnetBlockWide

#: ImageNet per-channel mean (RGB, values in [0, 1]) subtracted from the input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet per-channel standard deviation (RGB, values in [0, 1]) dividing the input.
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Input height and width must be multiples of this (pixels): the encoder's total stride.
SIZE_MULTIPLE = 32
#: Upsampling factor (ratio) of the final pixel shuffle, from stride 4 to full resolution.
LAST_UPSAMPLE = 4


class ImageEncoder(nn.Module):
    """Holder of the ConvNeXt backbone under the attribute name ``arch``.

    Args:
        depths: Blocks per ConvNeXt stage.
        dims: Channels per ConvNeXt stage.
    """

    def __init__(self, depths: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        self.arch = ConvNeXt(depths, dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the four normalised stage features of a ``Bx3xHxW`` image, shallowest first.

        Args:
            x: ``Bx3xHxW`` normalised image.

        Returns:
            Features at strides 4, 8, 16 and 32.
        """
        features: list[torch.Tensor] = self.arch(x)
        return features


class DualDecoder(nn.Module):
    """Pixel decoder (U-Net from the deepest feature up) feeding the colour decoder.

    Args:
        encoder_dims: Channels of the four encoder features, shallowest first.
        nf: Width of the pixel decoder; its last block and the image features use nf / 2.
        num_queries: Colour queries of the colour decoder.
        dec_layers: Transformer layers of the colour decoder.
        hidden_dim: Transformer width.
        nheads: Attention heads.
        dim_feedforward: Hidden width of the feed-forward layers.
        blur: Whether pixel shuffles are followed by the anti-checkerboard blur.
    """

    def __init__(
        self,
        encoder_dims: Sequence[int],
        *,
        nf: int = 512,
        num_queries: int = 100,
        dec_layers: int = 9,
        hidden_dim: int = 256,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        blur: bool = True,
    ) -> None:
        super().__init__()
        skips = list(reversed(encoder_dims[:-1]))
        widths = [nf] * (len(skips) - 1) + [nf // 2]
        blocks = []
        in_channels = encoder_dims[-1]
        for skip_channels, out_channels in zip(skips, widths, strict=True):
            blocks.append(UnetBlockWide(in_channels, skip_channels, out_channels, blur=blur))
            in_channels = out_channels
        self.layers = nn.ModuleList(blocks)
        self.last_shuf = PixelShuffleUpsampler(
            nf // 2, nf // 2, scale=LAST_UPSAMPLE, blur=blur, batch_norm=False
        )
        self.color_decoder = MultiScaleColorDecoder(
            widths,
            hidden_dim=hidden_dim,
            num_queries=num_queries,
            nheads=nheads,
            dim_feedforward=dim_feedforward,
            dec_layers=dec_layers,
            color_embed_dim=nf // 2,
        )

    def pixel_decode(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run the U-Net from the deepest encoder feature up.

        Args:
            features: The four encoder features, shallowest first.

        Returns:
            The three block outputs (strides 16, 8, 4, coarsest first) followed by the
            ``Bx(nf/2)xHxW`` full-resolution image features.
        """
        x = features[-1]
        outputs = []
        for block, skip in zip(self.layers, reversed(features[:-1]), strict=True):
            x = block(x, skip)
            outputs.append(x)
        outputs.append(self.last_shuf(x))
        return outputs

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode the encoder features into per-query colour maps.

        Args:
            features: The four encoder features, shallowest first.

        Returns:
            ``BxQxHxW`` colour maps at the input resolution.
        """
        *scales, image_features = self.pixel_decode(features)
        colours: torch.Tensor = self.color_decoder(scales, image_features)
        return colours


class DDColor(nn.Module):
    """DDColor: predicts the Lab ab channels of an image from its RGB (grey) rendering.

    The module is built randomly initialised; :func:`ddcolor.build.build_ddcolor` builds it
    with the weights of a checkpoint.

    Args:
        encoder_depths: Blocks per ConvNeXt stage.
        encoder_dims: Channels per ConvNeXt stage.
        nf: Width of the pixel decoder.
        num_queries: Colour queries.
        dec_layers: Transformer layers of the colour decoder.
        num_output_channels: Output channels (2: a and b).
        hidden_dim: Transformer width.
        nheads: Attention heads.
        dim_feedforward: Hidden width of the feed-forward layers.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        *,
        encoder_depths: Sequence[int] = (3, 3, 27, 3),
        encoder_dims: Sequence[int] = (192, 384, 768, 1536),
        nf: int = 512,
        num_queries: int = 100,
        dec_layers: int = 9,
        num_output_channels: int = 2,
        hidden_dim: int = 256,
        nheads: int = 8,
        dim_feedforward: int = 2048,
    ) -> None:
        super().__init__()
        self.encoder = ImageEncoder(encoder_depths, encoder_dims)
        self.decoder = DualDecoder(
            encoder_dims,
            nf=nf,
            num_queries=num_queries,
            dec_layers=dec_layers,
            hidden_dim=hidden_dim,
            nheads=nheads,
            dim_feedforward=dim_feedforward,
        )
        refine = SpectralNormConv2d(num_queries + 3, num_output_channels, 1)
        self.refine_net = nn.Sequential(nn.Sequential(refine))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """Standardise a ``Bx3xHxW`` RGB image in [0, 1] with the ImageNet statistics.

        Args:
            rgb: ``Bx3xHxW`` float RGB in [0, 1].

        Returns:
            ``Bx3xHxW`` normalised image in the dtype of the ``mean`` buffer.
        """
        return (rgb.to(self.mean.dtype) - self.mean) / self.std

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Predict the ab channels of Lab for a batch of images.

        Args:
            rgb: ``Bx3xHxW`` float RGB in [0, 1] (the grey image replicated to three
                channels), H and W multiples of 32. It is cast to the model's dtype.

        Returns:
            ``Bx2xHxW`` ab prediction (CIE Lab a and b, unscaled).

        Raises:
            ValueError: If the input is not ``Bx3xHxW`` with H and W multiples of 32.
        """
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected a Bx3xHxW tensor, got shape {tuple(rgb.shape)}")
        height, width = rgb.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or not height or not width:
            raise ValueError(
                f"height and width must be positive multiples of {SIZE_MULTIPLE}, "
                f"got {height}x{width}"
            )
        x = self.normalize(rgb)
        colours = self.decoder(self.encoder(x))
        ab: torch.Tensor = self.refine_net(torch.cat([colours, x], dim=1))
        return ab
