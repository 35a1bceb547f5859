"""Tests of DDColor's building blocks: spectral-norm convolution, layer norms, upsampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.modeling import LayerNorm, LayerNorm2d, PixelShuffleUpsampler, SpectralNormConv2d

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


# --------------------------------------------------------------------------- upsampler


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
