"""Tests of DDColor's transformer: position encoding, attention and the colour decoder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.modeling import (
    DDColor,
    MultiHeadAttention,
    MultiScaleColorDecoder,
    PositionEmbeddingSine,
)

# --------------------------------------------------------------------------- transformer


def test_position_encoding_follows_the_normalised_sine_formula() -> None:
    features, height, width = 8, 3, 5
    encoding = PositionEmbeddingSine(features)(torch.zeros(2, 7, height, width))

    assert encoding.shape == (1, 2 * features, height, width)
    for y in range(height):
        for x in range(width):
            for k in range(features):
                wavelength = 10000 ** (2 * (k // 2) / features)
                angle_y = (y + 1) / (height + 1e-6) * 2 * math.pi / wavelength
                angle_x = (x + 1) / (width + 1e-6) * 2 * math.pi / wavelength
                trig = math.sin if k % 2 == 0 else math.cos
                assert encoding[0, k, y, x].item() == pytest.approx(trig(angle_y), abs=1e-5)
                assert encoding[0, features + k, y, x].item() == pytest.approx(
                    trig(angle_x), abs=1e-5
                )


def test_position_encoding_is_built_in_float32_then_cast_to_the_feature_dtype() -> None:
    layer = PositionEmbeddingSine(16)

    half = layer(torch.zeros(1, 4, 6, 10, dtype=torch.float16))
    full = layer(torch.zeros(1, 4, 6, 10))

    assert half.dtype == torch.float16
    assert torch.equal(half, full.half())


def test_multi_head_attention_equals_torch_multihead_attention_with_the_same_weights() -> None:
    torch.manual_seed(15)
    ours = MultiHeadAttention(32, 4)
    with torch.no_grad():
        ours.in_proj_bias.normal_()
        ours.out_proj.bias.normal_()
    reference = nn.MultiheadAttention(32, 4)
    reference.load_state_dict(ours.state_dict(), strict=True)
    query, key, value = torch.randn(3, 2, 9, 32).unbind(0)

    with torch.no_grad():
        expected = reference(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), need_weights=False
        )[0].transpose(0, 1)
        actual = ours(query, key, value)

    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def _sine_encoding(height: int, width: int, features: int) -> torch.Tensor:
    """DETR's normalised sine encoding as ``HW x 1 x 2F``, written out directly."""
    ys = torch.arange(1, height + 1, dtype=torch.float64) / (height + 1e-6) * 2 * math.pi
    xs = torch.arange(1, width + 1, dtype=torch.float64) / (width + 1e-6) * 2 * math.pi
    k = torch.arange(features, dtype=torch.float64)
    wavelengths = 10000 ** (2 * torch.div(k, 2, rounding_mode="floor") / features)
    even = (k % 2 == 0)[None, :]

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] / wavelengths[None, :]
        return torch.where(even, angles.sin(), angles.cos())

    grid_y = encode(ys)[:, None, :].expand(height, width, features)
    grid_x = encode(xs)[None, :, :].expand(height, width, features)
    return torch.cat([grid_y, grid_x], dim=2).reshape(height * width, 1, 2 * features).float()


def _reference_color_decoder(
    decoder: MultiScaleColorDecoder,
    scales: Sequence[torch.Tensor],
    image_features: torch.Tensor,
    *,
    cross_attention_first: bool = True,
    level_of: Callable[[int], int] = lambda i: i % 3,
) -> torch.Tensor:
    """Recompute the colour decoder with torch's own attention, sequence-first as upstream."""
    state = decoder.state_dict()
    hidden = state["query_feat.weight"].shape[1]

    def attention(prefix: str) -> nn.MultiheadAttention:
        layer = nn.MultiheadAttention(hidden, 8)
        layer.load_state_dict(
            {
                key.removeprefix(prefix): value
                for key, value in state.items()
                if key.startswith(prefix)
            }
        )
        return layer.eval()

    def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (hidden,), state[prefix + "weight"], state[prefix + "bias"])

    memories, positions = [], []
    for level, feature in enumerate(scales):
        projected = F.conv2d(
            feature, state[f"input_proj.{level}.weight"], state[f"input_proj.{level}.bias"]
        )
        memories.append(projected.flatten(2).permute(2, 0, 1) + state["level_embed.weight"][level])
        positions.append(_sine_encoding(feature.shape[2], feature.shape[3], hidden // 2))
    batch = image_features.shape[0]
    query_pos = state["query_embed.weight"][:, None, :].repeat(1, batch, 1)
    out = state["query_feat.weight"][:, None, :].repeat(1, batch, 1)
    for i in range(len(decoder.transformer_ffn_layers)):
        level = level_of(i)
        cross = attention(f"transformer_cross_attention_layers.{i}.multihead_attn.")
        self_attn = attention(f"transformer_self_attention_layers.{i}.self_attn.")

        def cross_step(
            x: torch.Tensor, i: int = i, level: int = level, cross: nn.Module = cross
        ) -> torch.Tensor:
            attended = cross(x + query_pos, memories[level] + positions[level], memories[level])[0]
            return norm(x + attended, f"transformer_cross_attention_layers.{i}.norm.")

        def self_step(
            x: torch.Tensor, i: int = i, self_attn: nn.Module = self_attn
        ) -> torch.Tensor:
            attended = self_attn(x + query_pos, x + query_pos, x)[0]
            return norm(x + attended, f"transformer_self_attention_layers.{i}.norm.")

        out = self_step(cross_step(out)) if cross_attention_first else cross_step(self_step(out))
        ffn = f"transformer_ffn_layers.{i}."
        hidden_out = F.relu(
            F.linear(out, state[ffn + "linear1.weight"], state[ffn + "linear1.bias"])
        )
        out = norm(
            out + F.linear(hidden_out, state[ffn + "linear2.weight"], state[ffn + "linear2.bias"]),
            ffn + "norm.",
        )
    embed = norm(out, "decoder_norm.").transpose(0, 1)
    for index in range(3):
        embed = F.linear(
            embed,
            state[f"color_embed.layers.{index}.weight"],
            state[f"color_embed.layers.{index}.bias"],
        )
        if index < 2:
            embed = F.relu(embed)
    return torch.einsum("bqc,bchw->bqhw", embed, image_features)


@pytest.fixture(scope="module")
def decoder_inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random pixel-decoder outputs of a 32x64 tiny model, batch of two."""
    generator = torch.Generator().manual_seed(16)
    scales = [
        torch.randn(2, 512, 2, 4, generator=generator),
        torch.randn(2, 512, 4, 8, generator=generator),
        torch.randn(2, 256, 8, 16, generator=generator),
    ]
    return scales, torch.randn(2, 256, 32, 64, generator=generator)


def test_color_decoder_matches_a_recomputation_with_cross_attention_before_self_attention(
    tiny_model: DDColor, decoder_inputs: tuple[list[torch.Tensor], torch.Tensor]
) -> None:
    decoder = tiny_model.decoder.color_decoder
    scales, image_features = decoder_inputs

    with torch.no_grad():
        actual = decoder(scales, image_features)
        expected = _reference_color_decoder(decoder, scales, image_features)

    assert actual.shape == (2, 100, 32, 64)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize(
    "variant",
    [
        {"cross_attention_first": False},
        {"level_of": lambda i: 2 - i % 3},
        {"level_of": lambda i: min(i // 3, 2)},
    ],
    ids=["self-attention-first", "finest-level-first", "levels-in-blocks"],
)
def test_color_decoder_differs_from_recomputations_with_another_order(
    tiny_model: DDColor,
    decoder_inputs: tuple[list[torch.Tensor], torch.Tensor],
    variant: dict[str, object],
) -> None:
    decoder = tiny_model.decoder.color_decoder
    scales, image_features = decoder_inputs

    with torch.no_grad():
        actual = decoder(scales, image_features)
        other = _reference_color_decoder(decoder, scales, image_features, **variant)  # type: ignore[arg-type]

    # The matching recomputation agrees to 1e-4 of the range; these must not.
    assert (actual - other).abs().max() > 1e-2 * other.abs().max()
