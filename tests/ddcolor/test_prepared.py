"""Tests of ddcolor.prepared, ddcolor.folding and ddcolor.kernels: the fast inference path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import ddcolor.kernels
from ddcolor.folding import Affine, Linear, bn_affine, conv_of, linear_of
from ddcolor.kernels import conv_nhwc, fused_available, linear
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.pipeline import Colorizer, network_input
from ddcolor.prepared import PreparedDDColor
from ddcolor.runners import TorchRunner

#: Largest |ab(prepared fp32) - ab(eager fp32)| allowed: float rounding of folded weights.
FP32_AB_TOLERANCE = 1e-4
#: The largest |ab| the scaled model predicts on the test input, in Lab units (a trained
#: model's ab reach about this).
SCALED_AB = 100.0
#: Largest |ab(prepared bf16) - ab(fp32)| allowed on the scaled model, in Lab units: the
#: bound panchro's CPU default is held to. Measured at 64 px on an AMD EPYC (AVX512-BF16):
#: 0.55 (0.55 to 0.78 over 64-128 px and three inputs; up to 1.08 with the head in bf16),
#: against 3.9 to 6.1 for eager autocast bf16.
BF16_AB_TOLERANCE = 1.0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _grey_input(rng: np.random.Generator, size: int, batch: int = 1) -> torch.Tensor:
    scans = [rng.integers(0, 256, (size + 13, size - 7), dtype=np.uint8) for _ in range(batch)]
    return torch.cat([network_input(scan, size, "opencv")[0] for scan in scans])


@pytest.fixture(scope="module")
def scaled_model(tiny_model: DDColor) -> DDColor:
    """The tiny model with its last colour-embedding layer scaled so that |ab| reaches 100."""
    model = copy.deepcopy(tiny_model)
    x = _grey_input(np.random.default_rng(3), 96)
    last = model.decoder.color_decoder.color_embed.layers[-1]
    assert isinstance(last, nn.Linear)
    for _ in range(3):  # ab = colour part (scaled) + a small part from the input
        with torch.inference_mode():
            span = float(model(x).abs().max())
        with torch.no_grad():
            last.weight.mul_(SCALED_AB / span)
            last.bias.mul_(SCALED_AB / span)
    return model


def test_prepared_fp32_gives_the_eager_networks_ab(
    tiny_model: DDColor, rng: np.random.Generator
) -> None:
    x = _grey_input(rng, 64, batch=2)
    with torch.inference_mode():
        expected = tiny_model(x)
        got = PreparedDDColor(tiny_model, torch.float32)(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() < FP32_AB_TOLERANCE


def test_prepared_network_takes_non_square_inputs(tiny_model: DDColor) -> None:
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        expected = tiny_model(x)
        prepared = PreparedDDColor(tiny_model)
        got = prepared(x)
        prepared(torch.rand(1, 3, 96, 64))
    assert (got - expected).abs().max().item() < FP32_AB_TOLERANCE
    # One position encoding per feature scale (strides 16, 8 and 4) and shape.
    assert sorted(prepared._positions) == [(4, 6), (6, 4), (8, 12), (12, 8), (16, 24), (24, 16)]


def test_prepared_bf16_stays_close_to_fp32_on_photograph_like_ab(
    scaled_model: DDColor, rng: np.random.Generator
) -> None:
    x = _grey_input(rng, 64)
    with torch.inference_mode():
        reference = scaled_model(x)
        reduced = PreparedDDColor(scaled_model, torch.bfloat16)(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = scaled_model(x).float()
    assert reference.abs().max().item() > SCALED_AB / 2
    assert reduced.dtype == torch.float32
    error = (reduced - reference).abs().max().item()
    assert error < BF16_AB_TOLERANCE
    assert error < (autocast - reference).abs().max().item() / 2


def test_prepared_bf16_keeps_weights_in_bf16_channels_last_and_stem_and_head_in_fp32(
    tiny_model: DDColor,
) -> None:
    prepared = PreparedDDColor(tiny_model, torch.bfloat16)
    block = prepared.stages[2][0]
    assert block.w1.dtype == block.w2.dtype == torch.bfloat16
    assert block.dwconv.weight.dtype == torch.bfloat16
    assert block.dwconv.weight.is_contiguous(memory_format=torch.channels_last)
    assert prepared.unet[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert prepared.head[0].dtype == prepared.stem.weight.dtype == torch.float32


def test_fused_kernels_run_on_this_cpu_and_agree_with_plain_operators(
    tiny_model: DDColor, rng: np.random.Generator
) -> None:
    x = _grey_input(rng, 64)
    assert fused_available(x) and not fused_available(x.half())
    prepared = PreparedDDColor(tiny_model)
    with torch.inference_mode():
        fused = prepared(x)
        ddcolor.kernels.FUSED = False
        try:
            plain = prepared(x)
        finally:
            ddcolor.kernels.FUSED = True
    assert (fused - plain).abs().max().item() < FP32_AB_TOLERANCE


@pytest.mark.parametrize("fused", [True, False])
def test_linear_applies_bias_activation_and_residual(fused: bool) -> None:
    ddcolor.kernels.FUSED = fused
    try:
        x, residual = torch.randn(2, 5, 7, 8), torch.randn(2, 5, 7, 3)
        weight, bias = torch.randn(3, 8), torch.randn(3)
        plain = x @ weight.T + bias
        for activation, expected in [
            ("none", plain),
            ("relu", plain.relu()),
            ("gelu", torch.nn.functional.gelu(plain)),
        ]:
            got = linear(x, weight, bias, activation=activation)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        got = linear(x, weight, bias, residual=residual)
        torch.testing.assert_close(got, plain + residual, rtol=1e-5, atol=1e-5)
    finally:
        ddcolor.kernels.FUSED = True


@pytest.mark.parametrize("fused", [True, False])
def test_conv_nhwc_is_the_nchw_convolution_in_nhwc(fused: bool) -> None:
    ddcolor.kernels.FUSED = fused
    try:
        x = torch.randn(2, 12, 10, 6)
        conv = nn.Conv2d(6, 6, 7, padding=3, groups=6)
        weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            expected = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            got = conv_nhwc(x, weight, conv.bias, padding=3, groups=6)
            relu = conv_nhwc(x, weight, conv.bias, padding=3, groups=6, activation="relu")
        assert got.is_contiguous() and got.shape == (2, 12, 10, 6)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(relu, expected.relu(), rtol=1e-5, atol=1e-5)
    finally:
        ddcolor.kernels.FUSED = True


def test_folded_affine_maps_equal_the_layers_they_replace() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    conv = nn.Conv2d(4, 3, 1)
    before, after = bn_affine(bn), Affine(torch.rand(3) + 0.5, torch.randn(3))
    folded = linear_of(conv).after(before).then(after)
    x = torch.randn(2, 4, 5, 5)
    with torch.inference_mode():
        expected = conv(bn(x)) * after.scale[:, None, None] + after.shift[:, None, None]
        got = torch.einsum("oi,bihw->bohw", folded.weight, x) + folded.bias[:, None, None]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert conv_of(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)).groups == 2
    assert isinstance(folded, Linear)


def test_torch_runner_prepares_the_network_on_the_cpu_once_per_precision(
    tiny_model: DDColor, rng: np.random.Generator
) -> None:
    runner = TorchRunner(tiny_model)
    x = _grey_input(rng, 64)
    for precision in ("bf16", "fp32", "bf16"):
        _, used = runner.predict(x, precision)
        assert used == precision
    assert sorted(runner._prepared) == ["bf16", "fp32"]
    assert isinstance(runner.network("bf16"), PreparedDDColor)
    assert runner.network("fp16") is None  # fp16 on a CPU stays eager autocast
    assert TorchRunner(tiny_model, prepared=False).network("bf16") is None
    assert TorchRunner(nn.Conv2d(3, 2, 1)).network("fp32") is None  # not a DDColor


def test_a_cpu_colorizer_runs_the_prepared_network(tiny_model: DDColor) -> None:
    colorizer = Colorizer(tiny_model, device="cpu", precision="fp32")
    assert isinstance(colorizer.runner, TorchRunner) and colorizer.runner.prepared
    assert isinstance(colorizer.runner.network(colorizer.precision), PreparedDDColor)
