"""Tests of the DDColor network: official parameter names, architecture facts, precision."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.build import (
    ARCHITECTURES,
    MODELS,
    ModelConfig,
    build_ddcolor,
    create_model,
    get_config,
)
from ddcolor.errors import InvalidSize
from ddcolor.modeling import (
    DDColor,
    LayerNorm,
    LayerNorm2d,
    MultiHeadAttention,
    MultiScaleColorDecoder,
    PixelShuffleUpsampler,
    PositionEmbeddingSine,
    SpectralNormConv2d,
)

#: Largest |fp16 - fp32| allowed, as a fraction of the largest |fp32| output value.
HALF_TOLERANCE = 0.01
#: Largest |bf16 - fp32| allowed, as a fraction of the largest |fp32| output value
#: (bfloat16 keeps 8 significant bits against float16's 11).
BFLOAT16_TOLERANCE = 0.05

KeyRows = Callable[[str], list[tuple[str, tuple[int, ...], str]]]


@dataclass(frozen=True)
class ForwardRun:
    """One float32 forward pass of the randomised tiny model, shared by several tests."""

    rgb: torch.Tensor
    output: torch.Tensor
    state_before: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def forward_run(tiny_model: DDColor) -> ForwardRun:
    """Run the tiny model once on a reproducible ``2x3x32x64`` batch."""
    rgb = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(4))
    state_before = {key: value.clone() for key, value in tiny_model.state_dict().items()}
    with torch.no_grad():
        output = tiny_model(rgb)
    return ForwardRun(rgb=rgb, output=output, state_before=state_before)


def _entries(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    }


# --------------------------------------------------------------------------- parameter names


@pytest.mark.parametrize("arch", ["tiny", "large"])
def test_state_dict_has_exactly_the_official_keys_shapes_and_dtypes(
    arch: str, official_keys: KeyRows
) -> None:
    rows = official_keys(arch)
    expected = {key: (shape, dtype) for key, shape, dtype in rows}
    with torch.device("meta"):
        model = create_model(ARCHITECTURES[arch])
    actual = _entries(model)

    assert len(expected) == len(rows)
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    wrong = {key: (actual[key], expected[key]) for key in expected if actual[key] != expected[key]}
    assert wrong == {}


def test_tiny_model_built_on_cpu_has_the_official_entries(
    tiny_model: DDColor, official_keys: KeyRows
) -> None:
    expected = {key: (shape, dtype) for key, shape, dtype in official_keys("tiny")}

    assert _entries(tiny_model) == expected


def test_strict_load_of_an_official_keyed_state_dict_needs_no_renaming(
    official_keys: KeyRows,
) -> None:
    with torch.device("meta"):
        model = create_model(ARCHITECTURES["large"])
        state = {
            key: torch.empty(shape, dtype=getattr(torch, dtype))
            for key, shape, dtype in official_keys("large")
        }

    result = model.load_state_dict(state, strict=True, assign=True)

    assert (result.missing_keys, result.unexpected_keys) == ([], [])


# --------------------------------------------------------------------------- build


def test_models_registry_holds_the_four_official_checkpoints() -> None:
    arches = {name: config.arch for name, config in MODELS.items()}

    assert arches == {
        "ddcolor_paper": "large",
        "ddcolor_modelscope": "large",
        "ddcolor_artistic": "large",
        "ddcolor_paper_tiny": "tiny",
    }
    assert MODELS["ddcolor_paper"].encoder_dims == (192, 384, 768, 1536)
    assert MODELS["ddcolor_paper"].encoder_depths == (3, 3, 27, 3)
    assert MODELS["ddcolor_paper_tiny"].encoder_dims == (96, 192, 384, 768)
    assert MODELS["ddcolor_paper_tiny"].encoder_depths == (3, 3, 9, 3)


def test_released_decoder_settings_are_the_defaults() -> None:
    config = MODELS["ddcolor_modelscope"]

    assert (config.nf, config.num_queries, config.num_scales, config.dec_layers) == (
        512,
        100,
        3,
        9,
    )
    assert config.num_output_channels == 2


def test_get_config_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="ddcolor_nonexistent"):
        get_config("ddcolor_nonexistent")


def test_model_config_rejects_a_number_of_scales_other_than_three() -> None:
    with pytest.raises(ValueError, match="num_scales"):
        ModelConfig(
            name="x",
            arch="tiny",
            encoder_depths=(1, 1, 1, 1),
            encoder_dims=(8, 8, 8, 8),
            num_scales=4,
        )


def test_build_ddcolor_returns_an_eval_model_of_the_named_configuration() -> None:
    with torch.device("meta"):
        model = build_ddcolor("ddcolor_paper_tiny", device="meta")

    assert not model.training
    assert all(not module.training for module in model.modules())
    assert model.encoder.arch.dims == (96, 192, 384, 768)
    assert model.checkpoint is None


# --------------------------------------------------------------------------- forward contract


def test_forward_returns_two_ab_channels_at_the_input_resolution(
    forward_run: ForwardRun,
) -> None:
    assert forward_run.output.shape == (2, 2, 32, 64)
    assert forward_run.output.dtype == torch.float32
    assert torch.isfinite(forward_run.output).all()


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 3, 64, 40), (1, 1, 64, 64), (3, 64, 64)])
def test_forward_rejects_inputs_that_are_not_bx3_multiples_of_32(
    tiny_model: DDColor, shape: tuple[int, ...]
) -> None:
    with pytest.raises(InvalidSize):
        tiny_model(torch.rand(shape))


def test_forward_treats_each_batch_item_independently(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    with torch.no_grad():
        alone = tiny_model(forward_run.rgb[1:])

    torch.testing.assert_close(forward_run.output[1:], alone, rtol=1e-4, atol=1e-5)


def test_eval_forward_leaves_every_buffer_unchanged(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    after = tiny_model.state_dict()

    changed = [
        key for key, value in forward_run.state_before.items() if not torch.equal(value, after[key])
    ]
    assert changed == []


def test_input_is_normalised_with_the_imagenet_statistics(tiny_model: DDColor) -> None:
    torch.testing.assert_close(tiny_model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(tiny_model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


# --------------------------------------------------------------------------- spectral norm


def _spectral_pair(*, bias: bool, padding: int, seed: int) -> tuple[SpectralNormConv2d, nn.Conv2d]:
    """Our layer and torch's spectral_norm(Conv2d) with identical weight, bias, u and v."""
    generator = torch.Generator().manual_seed(seed)
    ours = SpectralNormConv2d(6, 5, 3, padding=padding, bias=bias)
    reference = nn.utils.spectral_norm(nn.Conv2d(6, 5, 3, padding=padding, bias=bias))
    weight = torch.randn(5, 6, 3, 3, generator=generator)
    # Vectors far from the singular ones, so that "no power iteration" is visible.
    u = F.normalize(torch.randn(5, generator=generator), dim=0)
    v = F.normalize(torch.randn(54, generator=generator), dim=0)
    with torch.no_grad():
        for layer in (ours, reference):
            layer.weight_orig.copy_(weight)
            layer.weight_u.copy_(u)
            layer.weight_v.copy_(v)
            if bias:
                layer.bias.copy_(torch.arange(5.0))
    return ours, reference


@pytest.mark.parametrize("bias", [True, False])
def test_eval_spectral_norm_conv_equals_torch_spectral_norm_in_eval_mode(bias: bool) -> None:
    ours, reference = _spectral_pair(bias=bias, padding=1, seed=6)
    ours.eval()
    reference.eval()
    x = torch.randn(2, 6, 9, 7, generator=torch.Generator().manual_seed(7))

    with torch.no_grad():
        expected = reference(x)
        actual = ours(x)

    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert set(ours.state_dict()) == set(reference.state_dict())


def test_eval_spectral_norm_divides_by_u_dot_w_v_without_power_iteration() -> None:
    ours, _ = _spectral_pair(bias=False, padding=0, seed=8)
    ours.eval()
    u_before, v_before = ours.weight_u.clone(), ours.weight_v.clone()

    with torch.no_grad():
        weight = ours.normalized_weight()

    sigma = torch.dot(u_before, ours.weight_orig.detach().flatten(1) @ v_before)
    torch.testing.assert_close(weight, ours.weight_orig.detach() / sigma)
    assert torch.equal(ours.weight_u, u_before)
    assert torch.equal(ours.weight_v, v_before)


def test_training_spectral_norm_conv_runs_one_power_iteration_like_torch() -> None:
    ours, reference = _spectral_pair(bias=True, padding=0, seed=9)
    ours.train()
    reference.train()
    x = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(10))

    expected = reference(x)
    actual = ours(x)

    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight_u, reference.weight_u)
    torch.testing.assert_close(ours.weight_v, reference.weight_v)


# --------------------------------------------------------------------------- layer norms


def _random_affine(norm: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=generator))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator))
    return norm


def test_layer_norm_2d_normalises_each_pixel_over_its_channels() -> None:
    norm = _random_affine(LayerNorm2d(12, eps=1e-6), seed=11)
    x = torch.randn(2, 12, 5, 3, generator=torch.Generator().manual_seed(12)) * 3 + 1

    expected = F.layer_norm(
        x.permute(0, 2, 3, 1), (12,), norm.weight.detach(), norm.bias.detach(), 1e-6
    ).permute(0, 3, 1, 2)

    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_first", [True, False])
def test_layer_norms_stay_finite_for_wide_float16_activations(channels_first: bool) -> None:
    norm = _random_affine(LayerNorm2d(64) if channels_first else LayerNorm(64), seed=13)
    shape = (1, 64, 4, 4) if channels_first else (1, 16, 64)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(14)) * 1000
    dim = 1 if channels_first else -1
    # The variance of these activations is far beyond float16's range of 65504.
    naive = (x.half() - x.half().mean(dim, keepdim=True)).pow(2).mean(dim)
    assert not torch.isfinite(naive).all()

    with torch.no_grad():
        reference = norm(x)
        half = norm.half()(x.half())

    assert half.dtype == torch.float16
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, rtol=1e-2, atol=1e-2)


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


# ----------------------------------------------------------------- encoder and pixel decoder


def test_encoder_returns_normalised_stage_outputs_and_continues_from_raw_ones(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    arch = tiny_model.encoder.arch
    x = tiny_model.normalize(forward_run.rgb)

    with torch.no_grad():
        features = tiny_model.encoder(x)
        raw, expected, chained, wrong = x, [], x, []
        for downsample, stage, norm in zip(
            arch.downsample_layers, arch.stages, arch.output_norms(), strict=True
        ):
            raw = stage(downsample(raw))
            expected.append(norm(raw))
            chained = norm(stage(downsample(chained)))
            wrong.append(chained)

    assert [tuple(f.shape) for f in features] == [
        (2, 96, 8, 16),
        (2, 192, 4, 8),
        (2, 384, 2, 4),
        (2, 768, 1, 2),
    ]
    for actual, reference in zip(features, expected, strict=True):
        torch.testing.assert_close(actual, reference)
    assert not torch.allclose(features[3], wrong[3], rtol=1e-3, atol=1e-3)


def test_pixel_decoder_goes_from_the_deepest_feature_up_with_skips_in_reverse(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    decoder = tiny_model.decoder
    with torch.no_grad():
        f0, f1, f2, f3 = tiny_model.encoder(tiny_model.normalize(forward_run.rgb))
        s0, s1, s2, image = decoder.pixel_decode([f0, f1, f2, f3])
        e0 = decoder.layers[0](f3, f2)
        e1 = decoder.layers[1](e0, f1)
        e2 = decoder.layers[2](e1, f0)
        expected_image = decoder.last_shuf(e2)

    assert [tuple(t.shape) for t in (s0, s1, s2, image)] == [
        (2, 512, 2, 4),
        (2, 512, 4, 8),
        (2, 256, 8, 16),
        (2, 256, 32, 64),
    ]
    for actual, reference in zip((s0, s1, s2, image), (e0, e1, e2, expected_image), strict=True):
        torch.testing.assert_close(actual, reference)


def test_upsampler_blurs_after_the_pixel_shuffle() -> None:
    torch.manual_seed(17)
    upsampler = PixelShuffleUpsampler(8, 4, scale=2, blur=True, batch_norm=False).eval()
    conv = upsampler.conv[0]
    assert isinstance(conv, SpectralNormConv2d)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(1, 8, 5, 6)

    with torch.no_grad():
        sigma = torch.dot(conv.weight_u, conv.weight_orig.flatten(1) @ conv.weight_v)
        activated = F.relu(F.conv2d(x, conv.weight_orig / sigma, conv.bias))
        expected = F.avg_pool2d(
            F.pad(F.pixel_shuffle(activated, 2), (1, 0, 1, 0), mode="replicate"), 2, stride=1
        )
        blurred_first = F.pixel_shuffle(
            F.avg_pool2d(F.pad(activated, (1, 0, 1, 0), mode="replicate"), 2, stride=1), 2
        )
        actual = upsampler(x)

    assert actual.shape == (1, 4, 10, 12)
    torch.testing.assert_close(actual, expected)
    assert not torch.allclose(actual, blurred_first, rtol=1e-3, atol=1e-3)


def test_refine_net_sees_the_colour_maps_and_the_normalised_input(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    rgb, actual = forward_run.rgb, forward_run.output
    with torch.no_grad():
        normalised = (rgb - tiny_model.mean) / tiny_model.std
        colours = tiny_model.decoder(tiny_model.encoder(normalised))
        expected = tiny_model.refine_net(torch.cat([colours, normalised], dim=1))
        with_raw_input = tiny_model.refine_net(torch.cat([colours, rgb], dim=1))

    assert colours.shape == (2, 100, 32, 64)
    torch.testing.assert_close(actual, expected)
    assert not torch.allclose(actual, with_raw_input, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- reduced precision


def _assert_close_to(output: torch.Tensor, reference: torch.Tensor, tolerance: float) -> None:
    assert torch.isfinite(output).all()
    error = (output.float() - reference).abs().max().item()
    assert error <= tolerance * reference.abs().max().item()


def test_half_model_on_cpu_gives_finite_output_close_to_float32(
    tiny_model_copy: DDColor, forward_run: ForwardRun
) -> None:
    model = tiny_model_copy.half()

    with torch.no_grad():
        output = model(forward_run.rgb.half())

    assert output.dtype == torch.float16
    _assert_close_to(output, forward_run.output, HALF_TOLERANCE)


def test_bfloat16_model_gives_finite_output_close_to_float32(
    tiny_model_copy: DDColor, forward_run: ForwardRun
) -> None:
    model = tiny_model_copy.to(torch.bfloat16)

    with torch.no_grad():
        output = model(forward_run.rgb)

    assert output.dtype == torch.bfloat16
    _assert_close_to(output, forward_run.output, BFLOAT16_TOLERANCE)


def test_cpu_autocast_bfloat16_gives_finite_output_close_to_float32(
    tiny_model: DDColor, forward_run: ForwardRun
) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = tiny_model(forward_run.rgb)

    _assert_close_to(output, forward_run.output, BFLOAT16_TOLERANCE)


@pytest.mark.gpu
def test_cuda_autocast_float16_gives_finite_output_close_to_float32(
    tiny_model_copy: DDColor, forward_run: ForwardRun
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA or ROCm device")
    model = tiny_model_copy.cuda()

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        output = model(forward_run.rgb.cuda()).cpu()

    _assert_close_to(output, forward_run.output, HALF_TOLERANCE)
