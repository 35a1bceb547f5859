"""Tests of the DDColor forward pass: contract, wiring of its parts, reduced precision."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ddcolor.modeling import DDColor

#: Largest |fp16 - fp32| allowed, as a fraction of the largest |fp32| output value.
HALF_TOLERANCE = 0.01
#: Largest |bf16 - fp32| allowed, as a fraction of the largest |fp32| output value
#: (bfloat16 keeps 8 significant bits against float16's 11).
BFLOAT16_TOLERANCE = 0.05


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
    with pytest.raises(ValueError, match="Bx3xHxW|multiples of 32"):
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
