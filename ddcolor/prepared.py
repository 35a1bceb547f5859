"""DDColor prepared for fast inference: folded weights, one dtype, channels-last, a fused head.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) is run
here by a forward pass written for inference over the weights of a loaded
:class:`ddcolor.modeling.DDColor`; the module itself stays as it is (training layout, state
dict keys). What changes, each exact up to float rounding:

- **The head at full resolution is not computed.** The network ends with
  ``ab = W [blur(shuffle(relu(conv(s2)))) . E ; x] + b``: per-pixel colour maps, the dot
  product of 100 colour embeddings ``E`` with 256 image-feature channels at the input
  size, then a 1x1 convolution to two channels. Pixel shuffle and the blur move and
  average pixels the same way in every channel, so they commute with any mix of channels:
  ``W_colour E`` (2 x 256) is applied to the features *before* the shuffle, at a quarter of
  the resolution, and only the two ab channels are shuffled and blurred. This skips the
  256-channel and 100-channel maps at the input size (at 512 px, 30 to 45 % of the torch
  eager forward on a CPU).
- **Fixed affine maps are merged into convolutions** (:mod:`ddcolor.folding`): batch
  norms, layer-scale, the input normalisation, spectral normalisation.
- **One dtype, cast once.** In bf16 the weights are converted when the network is prepared,
  not at every call as autocast does (for the large model, 200 million values per image);
  layer norms (statistics in float32 over bf16 activations), attention, the colour queries
  and the final ab stay float32, as under autocast, and so do the stem and the head, where
  bf16 rounding moved ab most.
- **Channels-last.** Activations are NHWC: ConvNeXt's per-pixel layer norms and MLPs read
  contiguous channels, with no permute copies between convolution and MLP.

The prepared weights are a copy (in bf16, half the size of the float32 model).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.folding import Affine, Conv, Linear, bn_affine, conv_of, linear_of
from ddcolor.kernels import conv_nhwc, linear
from ddcolor.modeling.convnext import ConvNeXtBlock
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.modeling.layer_norm import LayerNorm, LayerNorm2d
from ddcolor.modeling.spectral_norm import SpectralNormConv2d
from ddcolor.modeling.transformer import CrossAttentionLayer, MultiHeadAttention
from ddcolor.modeling.unet import UnetBlockWide

__all__ = ["PreparedDDColor"]

logger = logging.getLogger(__name__)

#: Pixel-shuffle factor of the last upsampler (stride 4 to the input size), in pixels.
HEAD_SCALE = 4
#: Compute dtype of the head (stride-4 features to 16 x 256 channels, ReLU, product with the
#: colour embeddings), whatever the network's: its 4096 channels rounded to bf16 moved ab by
#: up to 1.0 Lab unit (large) and 0.8 (tiny) on checkpoints whose ab reach 100 (0.65 and 0.54
#: with this head in float32), for 10 % (large) to 24 % (tiny) less CPU time per forward at
#: 512 px.
HEAD_DTYPE = torch.float32

_M = TypeVar("_M", bound=nn.Module)


def _item(container: nn.Module, index: int, kind: type[_M]) -> _M:
    """Child ``index`` of a ``Sequential`` or ``ModuleList``, checked to be a ``kind``."""
    child = cast(nn.Sequential, container)[index]
    assert isinstance(child, kind), f"expected {kind.__name__}, got {type(child).__name__}"
    return child


def _items(container: nn.Module, kind: type[_M]) -> list[_M]:
    return [_item(container, index, kind) for index in range(len(cast(nn.Sequential, container)))]


class _Norm:
    """A layer norm over the last axis, with float32 scale and shift."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> None:
        self.shape = (weight.shape[0],)
        self.weight, self.bias, self.eps = weight.detach().float(), bias.detach().float(), eps

    @classmethod
    def of(cls, norm: LayerNorm | LayerNorm2d) -> _Norm:
        return cls(norm.weight, norm.bias, norm.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)

    def then(self, affine: Affine) -> _Norm:
        return _Norm(self.weight * affine.scale, self.bias * affine.scale + affine.shift, self.eps)


def _cast_linear(linear: Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight.to(dtype).contiguous(), linear.bias.to(dtype)


class _NhwcConv:
    """A convolution over NHWC activations, with its weight in the compute dtype."""

    def __init__(self, conv: Conv, dtype: torch.dtype) -> None:
        self.weight = conv.weight.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.to(dtype)
        self.stride, self.padding, self.groups = conv.stride, conv.padding, conv.groups

    def __call__(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        return conv_nhwc(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
            activation=activation,
        )


def _shuffle_blur(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Pixel shuffle of NHWC features, then the decoder's blur (top-left replicate pad, 2x2 mean).

    The shuffle writes straight into the padded buffer the blur reads.
    """
    batch, height, width, channels = x.shape
    channels //= scale * scale
    padded = x.new_empty(batch, height * scale + 1, width * scale + 1, channels)
    inner = padded[:, 1:, 1:].reshape(batch, height, scale, width, scale, channels)
    assert inner.data_ptr() == padded[:, 1:, 1:].data_ptr()  # a view, not a copy
    inner.copy_(x.view(batch, height, width, channels, scale, scale).permute(0, 1, 4, 2, 5, 3))
    padded[:, 0, 1:] = padded[:, 1, 1:]
    padded[:, :, 0] = padded[:, :, 1]
    out = F.avg_pool2d(padded.permute(0, 3, 1, 2), 2, stride=1).permute(0, 2, 3, 1)
    return out if out.is_contiguous() else out.contiguous()


class _Block:
    """One ConvNeXt block over NHWC activations, layer-scale folded into its second linear."""

    def __init__(self, block: ConvNeXtBlock, dtype: torch.dtype) -> None:
        self.dwconv = _NhwcConv(conv_of(block.dwconv), dtype)
        self.norm = _Norm.of(block.norm)
        gamma = block.gamma.detach().float()
        second = linear_of(block.pwconv2).then(Affine(gamma, torch.zeros_like(gamma)))
        self.w1, self.b1 = _cast_linear(linear_of(block.pwconv1), dtype)
        self.w2, self.b2 = _cast_linear(second, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        branch = linear(self.norm(self.dwconv(x)), self.w1, self.b1, activation="gelu")
        return linear(branch, self.w2, self.b2, residual=x)


class _UnetBlock:
    """A U-Net block whose batch norms live in its neighbours' weights.

    Its input arrives already normalised; its output is ``relu(conv3x3(...))``, before its
    final batch norm, which the consumers fold in (:attr:`out_bn`).
    """

    def __init__(self, block: UnetBlockWide, before: Affine | None, dtype: torch.dtype) -> None:
        conv = block.shuf.conv
        shuffle = linear_of(_item(conv, 0, SpectralNormConv2d))
        shuffle = shuffle.then(bn_affine(_item(conv, 1, nn.BatchNorm2d)))
        if before is not None:
            shuffle = shuffle.after(before)
        self.w_up, self.b_up = _cast_linear(shuffle, dtype)
        self.scale = block.shuf.scale
        self.conv = _NhwcConv(conv_of(_item(block.conv, 0, SpectralNormConv2d)), dtype)
        self.out_bn = bn_affine(_item(block.conv, 2, nn.BatchNorm2d))

    def __call__(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = _shuffle_blur(linear(x, self.w_up, self.b_up, activation="relu"), self.scale)
        return self.conv(torch.cat([up, torch.relu(skip)], dim=3), activation="relu")


class PreparedDDColor:
    """A DDColor network's weights arranged for inference in one compute dtype.

    Callable like the network: ``Bx3xSxS`` float32 grey RGB in [0, 1] in, ``Bx2xSxS``
    float32 ab out. Built from an eval-mode model on its device; it keeps references to the
    model's transformer modules (float32) and copies of everything else.

    Args:
        model: DDColor in eval mode.
        dtype: Compute dtype of the convolutions and large matrix products
            (``torch.float32`` or ``torch.bfloat16``).
    """

    def __init__(self, model: DDColor, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        with torch.no_grad():
            self._prepare_encoder(model, dtype)
            self._prepare_decoder(model, dtype)
        self._positions: dict[tuple[int, int], torch.Tensor] = {}

    def _prepare_encoder(self, model: DDColor, dtype: torch.dtype) -> None:
        arch = model.encoder.arch
        std = model.std.detach().flatten().float()
        self.normalise = Affine(1 / std, -model.mean.detach().flatten().float() / std)
        stem_layers = _item(arch.downsample_layers, 0, nn.Sequential)
        stem = conv_of(_item(stem_layers, 0, nn.Conv2d))
        scale = self.normalise.scale[None, :, None, None]
        shift = self.normalise.shift[None, :, None, None]
        assert stem.padding == 0 and stem.bias is not None  # so normalising folds exactly
        bias = stem.bias + (stem.weight * shift).sum((1, 2, 3))
        # The stem stays float32: in bf16 the grey input keeps 8 significant bits, and the
        # layer norm after the stem amplifies that rounding (ab moved by up to 4 instead of
        # 0.7 on a checkpoint whose ab reach 100). It is 0.1 % of the network's work.
        self.stem = _NhwcConv(Conv(stem.weight * scale, bias, stride=stem.stride), torch.float32)
        self.stem_norm = _Norm.of(_item(stem_layers, 1, LayerNorm2d))
        self.downsample = []
        for layers in _items(arch.downsample_layers, nn.Sequential)[1:]:
            norm = _Norm.of(_item(layers, 0, LayerNorm2d))
            self.downsample.append((norm, _NhwcConv(conv_of(_item(layers, 1, nn.Conv2d)), dtype)))
        self.stages = [
            [_Block(block, dtype) for block in _items(stage, ConvNeXtBlock)]
            for stage in _items(arch.stages, nn.Sequential)
        ]
        unet = _items(model.decoder.layers, UnetBlockWide)
        norms = [_Norm.of(norm) for norm in arch.output_norms()]
        # The skip features reach the U-Net only through its batch norm: fold it in.
        skips = [norms[i].then(bn_affine(unet[len(unet) - 1 - i].bn)) for i in range(3)]
        self.output_norms = [*skips, norms[3]]

    def _prepare_decoder(self, model: DDColor, dtype: torch.dtype) -> None:
        decoder = model.decoder
        colour = decoder.color_decoder
        self.unet: list[_UnetBlock] = []
        before: Affine | None = None
        for block in _items(decoder.layers, UnetBlockWide):
            self.unet.append(_UnetBlock(block, before, dtype))
            before = self.unet[-1].out_bn
        assert before is not None
        self.projections = []
        for level, prepared in enumerate(self.unet):
            folded = linear_of(_item(colour.input_proj, level, nn.Conv2d)).after(prepared.out_bn)
            embed = colour.level_embed.weight[level].detach().float()
            self.projections.append(_cast_linear(Linear(folded.weight, folded.bias + embed), dtype))
        head = linear_of(_item(decoder.last_shuf.conv, 0, SpectralNormConv2d)).after(before)
        subpixels = HEAD_SCALE * HEAD_SCALE
        # Reorder the outputs from (channel, subpixel) to (subpixel, channel) so that each
        # pixel's features per subpixel are contiguous for the product with the embeddings.
        width = head.weight.shape[0] // subpixels
        weight = head.weight.view(width, subpixels, -1).transpose(0, 1).reshape(head.weight.shape)
        bias = head.bias.view(width, subpixels).t().reshape(-1)
        self.head = _cast_linear(Linear(weight, bias), HEAD_DTYPE)
        refine = linear_of(_item(_item(model.refine_net, 0, nn.Sequential), 0, SpectralNormConv2d))
        queries = colour.num_queries
        self.refine_colour = refine.weight[:, :queries].contiguous()
        rgb = Linear(refine.weight[:, queries:], refine.bias).after(self.normalise)
        self.refine_rgb = (rgb.weight[:, :, None, None].contiguous(), rgb.bias)
        self.colour = colour
        self.cross = _items(colour.transformer_cross_attention_layers, CrossAttentionLayer)
        self.keys_values = []
        for layer in self.cross:
            attn = layer.multihead_attn
            w_k, w_v = attn.in_proj_weight.detach().float().chunk(3)[1:]
            b_k, b_v = attn.in_proj_bias.detach().float().chunk(3)[1:]
            self.keys_values.append(
                (_cast_linear(Linear(w_k, b_k), dtype), _cast_linear(Linear(w_v, b_v), dtype))
            )

    def _encode(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_norm(self.stem(rgb.permute(0, 2, 3, 1).contiguous())).to(self.dtype)
        features = []
        for stage, blocks in enumerate(self.stages):
            if stage:
                norm, conv = self.downsample[stage - 1]
                x = conv(norm(x))
            for block in blocks:
                x = block(x)
            features.append(self.output_norms[stage](x))
        return features

    def _position(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """The sine position encoding of an h x w map, 1 x hw x C, cached per shape."""
        key = (height, width)
        if key not in self._positions:
            probe = torch.empty(1, 1, height, width, device=device, dtype=self.dtype)
            pos = self.colour.pe_layer(probe).flatten(2).transpose(1, 2).contiguous()
            self._positions[key] = pos
        return self._positions[key]

    def _embeddings(self, scales: list[torch.Tensor]) -> torch.Tensor:
        """Run the colour queries through the transformer: ``BxQxE`` colour embeddings."""
        colour = self.colour
        batch = scales[0].shape[0]
        memories, keys_in = [], []
        for (weight, bias), scale in zip(self.projections, scales, strict=True):
            _, height, width, _ = scale.shape
            memory = linear(scale.flatten(1, 2), weight, bias)
            memories.append(memory)
            keys_in.append(memory + self._position(height, width, scale.device))
        query_pos = colour.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        queries = colour.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        selves = cast(Iterable[nn.Module], colour.transformer_self_attention_layers)
        ffns = cast(Iterable[nn.Module], colour.transformer_ffn_layers)
        for i, (cross, self_attn, ffn) in enumerate(zip(self.cross, selves, ffns, strict=True)):
            level = i % colour.num_feature_levels
            attended = self._cross_attend(
                cross.multihead_attn, i, queries + query_pos, keys_in[level], memories[level]
            )
            queries = cross.norm(queries + attended)
            queries = self_attn(queries, query_pos=query_pos)
            queries = ffn(queries)
        embeddings: torch.Tensor = colour.color_embed(colour.decoder_norm(queries))
        return embeddings

    def _cross_attend(
        self,
        attn: MultiHeadAttention,
        index: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
    ) -> torch.Tensor:
        """Attention of float32 queries to keys and values projected in the compute dtype."""
        (w_k, b_k), (w_v, b_v) = self.keys_values[index]
        w_q, b_q = attn.in_proj_weight[: attn.embed_dim], attn.in_proj_bias[: attn.embed_dim]
        q = attn._split_heads(F.linear(query, w_q, b_q))
        k = attn._split_heads(linear(key, w_k, b_k)).float()
        v = attn._split_heads(linear(value, w_v, b_v)).float()
        attended = F.scaled_dot_product_attention(q, k, v)
        batch, _, length, _ = attended.shape
        out: torch.Tensor = attn.out_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return out

    def _head(
        self, image: torch.Tensor, embeddings: torch.Tensor, rgb: torch.Tensor
    ) -> torch.Tensor:
        """ab from the stride-4 features, the colour embeddings and the input, at full size."""
        batch, height, width, _ = image.shape
        weight, bias = self.head
        features = linear(image.to(HEAD_DTYPE), weight, bias, activation="relu")
        mix = (self.refine_colour @ embeddings).to(HEAD_DTYPE)  # B x 2 x E
        subpixels = HEAD_SCALE * HEAD_SCALE
        flat = features.view(batch, height * width * subpixels, -1)
        ab = torch.matmul(flat, mix.transpose(1, 2)).float()  # B x (h w s) x 2
        ab = ab.view(batch, height, width, HEAD_SCALE, HEAD_SCALE, -1).permute(0, 5, 1, 3, 2, 4)
        ab = ab.reshape(batch, -1, height * HEAD_SCALE, width * HEAD_SCALE)
        ab = F.avg_pool2d(F.pad(ab, (1, 0, 1, 0), mode="replicate"), 2, stride=1)
        weight_rgb, bias_rgb = self.refine_rgb
        return ab + F.conv2d(rgb, weight_rgb, bias_rgb)

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """Predict ab.

        Args:
            rgb: ``Bx3xSxS`` float32 RGB in [0, 1], S a multiple of 32.

        Returns:
            ``Bx2xSxS`` float32 ab.
        """
        rgb = rgb.float()
        features = self._encode(rgb)
        x = features[-1]
        scales = []
        for block, skip in zip(self.unet, reversed(features[:-1]), strict=True):
            x = block(x, skip)
            scales.append(x)
        return self._head(x, self._embeddings(scales), rgb)
