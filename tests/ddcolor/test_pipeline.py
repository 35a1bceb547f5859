"""Tests of ddcolor.pipeline: the published pipeline, bit depth, sizes, OOM ladder, precision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import reference_colorize
from torch import nn

from ddcolor.colorspace import rgb_to_lab, to_unit_float
from ddcolor.device import resolve_precision
from ddcolor.errors import (
    CheckpointError,
    DDColorError,
    InvalidSize,
    OutOfMemoryAtMinimumSize,
    UnsupportedPrecision,
)
from ddcolor.pipeline import Colorizer, colorize, load_colorizer, network_input
from ddcolor.registry import OOM_LADDER, PRESETS, size_ladder, validate_size

#: Factor applied to the random tiny model's ab (about +-1) to give photograph-like colours.
AB_GAIN = 40.0
#: Largest |ab(bf16) - ab(fp32)| allowed, in ab units, for the scaled random tiny model (|ab|
#: up to about 11 on the test photo): bf16 keeps 8 significant bits. Measured: 0.10.
BF16_AB_TOLERANCE = 0.5
#: One 8-bit step of L, in L units.
L_STEP_8BIT = 100 / 255


class _Gain(nn.Module):
    """Scale a model's ab, so random weights give visible colours."""

    def __init__(self, inner: nn.Module, gain: float) -> None:
        super().__init__()
        self.inner = inner
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ab: torch.Tensor = self.inner(x)
        return ab * self.gain


class _ConstantAb(nn.Module):
    """Predict the same ab everywhere; optionally run out of memory above an input size or
    give NaN under autocast."""

    def __init__(
        self,
        a: float = 0.0,
        b: float = 0.0,
        *,
        oom_above: int | None = None,
        nan_under_autocast: bool = False,
    ) -> None:
        super().__init__()
        self.ab = nn.Parameter(torch.tensor([float(a), float(b)]), requires_grad=False)
        self.oom_above = oom_above
        self.nan_under_autocast = nan_under_autocast
        self.sizes_seen: list[int] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes_seen.append(x.shape[-1])
        self.inputs.append(x.clone())
        if self.oom_above is not None and x.shape[-1] > self.oom_above:
            raise torch.OutOfMemoryError(f"fake: {x.shape[-1]} px does not fit")
        ab = self.ab.view(1, 2, 1, 1).expand(x.shape[0], 2, *x.shape[2:]).clone()
        if self.nan_under_autocast and torch.is_autocast_enabled(x.device.type):
            ab[:, :, :4, :4] = float("nan")
        return ab


@pytest.fixture(scope="module")
def tiny(tiny_model: nn.Module) -> nn.Module:
    """The shared random tiny DDColor, with its ab scaled by :data:`AB_GAIN`."""
    return _Gain(tiny_model, AB_GAIN).eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def photo(rng: np.random.Generator) -> np.ndarray:
    """A smooth random 8-bit RGB image of odd size, with a few sharp edges."""
    base = rng.integers(0, 256, (12, 18, 3)).astype(np.float32)
    image = np.kron(base, np.ones((28, 29, 1)))[:333, :517]
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_nearest_reproduces_the_published_pipeline_bit_for_bit(
    tiny: nn.Module, photo: np.ndarray
) -> None:
    # Same colour arithmetic bit for bit (transforms tests), the same torch op for ab, and a
    # resize within one float32 step of OpenCV's, which did not move any network input here.
    result = colorize(tiny, photo, size=256, upsample="nearest")
    np.testing.assert_array_equal(result.image, reference_colorize(tiny, photo, 256))


def test_nearest_reproduces_the_published_pipeline_for_grey_input(
    tiny: nn.Module, rng: np.random.Generator
) -> None:
    grey = np.clip(np.kron(rng.integers(0, 256, (9, 7)), np.ones((31, 37))), 0, 255)
    grey = grey.astype(np.uint8)
    result = colorize(tiny, grey, size=256, upsample="nearest")
    assert result.image.shape == grey.shape + (3,)
    np.testing.assert_array_equal(result.image, reference_colorize(tiny, grey, 256))


@pytest.mark.parametrize("shape", [(333, 517), (1, 1), (257, 3), (3, 700)])
def test_output_has_the_input_size(shape: tuple[int, int], rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    result = colorize(_ConstantAb(10, -20), image, size=256)
    assert result.image.shape == shape + (3,)
    assert result.image.dtype == np.uint8


def test_sixteen_bit_grey_comes_back_unchanged_when_no_colour_is_added(
    rng: np.random.Generator,
) -> None:
    grey = rng.integers(0, 65536, (67, 45), dtype=np.uint16)
    result = colorize(_ConstantAb(0, 0), grey, size=256)
    assert result.image.dtype == np.uint16
    # 8-bit quantisation of L would move values by up to 128 (and OpenCV's table by ~300).
    assert np.abs(result.image.astype(np.int64) - grey[..., None]).max() <= 1


def test_sixteen_bit_input_keeps_its_sixteen_bit_lightness(
    tiny: nn.Module, rng: np.random.Generator
) -> None:
    ramp = np.linspace(2000, 63000, 97 * 131).reshape(97, 131)
    grey = (ramp + rng.normal(0, 300, ramp.shape)).astype(np.uint16)
    out = colorize(tiny, grey, size=256).image
    light_in = rgb_to_lab(np.repeat(to_unit_float(grey)[..., None], 3, 2), math="exact")[..., 0]
    light_out = rgb_to_lab(to_unit_float(out), math="exact")[..., 0]
    in_gamut = (out > 0).all(-1) & (out < 65535).all(-1)
    assert in_gamut.mean() > 0.5
    assert np.abs(light_out - light_in)[in_gamut].max() < L_STEP_8BIT / 20


def test_rgb_input_feeds_the_network_grey_and_keeps_its_lightness(photo: np.ndarray) -> None:
    spy = _ConstantAb(12, -7)
    out = colorize(spy, photo, size=256).image
    seen = spy.inputs[0]
    # Grey up to OpenCV's rounded XYZ -> RGB matrix, which the published pipeline shares.
    assert (seen - seen.mean(1, keepdim=True)).abs().max().item() < 1e-5
    light_in = rgb_to_lab(to_unit_float(photo))[..., 0]
    light_out = rgb_to_lab(to_unit_float(out))[..., 0]
    in_gamut = (out > 0).all(-1) & (out < 255).all(-1)
    assert in_gamut.mean() > 0.9
    # Rounding the output to 8 bits moves L by at most about half an 8-bit step.
    assert np.abs(light_out - light_in)[in_gamut].max() < L_STEP_8BIT


def test_upsampling_methods_all_give_full_size_images(tiny: nn.Module, photo: np.ndarray) -> None:
    model = _ConstantAb(15, 30)
    images = {
        m: colorize(model, photo, size=256, upsample=m).image
        for m in ("nearest", "bilinear", "bicubic", "guided")
    }
    for method, image in images.items():
        assert image.shape == photo.shape, method
    # A constant ab is reproduced by every method, so the outputs agree to rounding.
    assert np.abs(images["guided"].astype(int) - images["nearest"]).max() <= 1
    with pytest.raises(ValueError, match="upsampling"):
        colorize(model, photo, size=256, upsample="lanczos")  # type: ignore[arg-type]


def test_out_of_memory_steps_down_the_ladder_to_the_first_size_that_fits(
    rng: np.random.Generator,
) -> None:
    model = _ConstantAb(5, 5, oom_above=384)
    result = colorize(model, rng.integers(0, 256, (40, 60), dtype=np.uint8), size=1024)
    assert result.size == 384
    assert result.sizes_tried == (1024, 768, 512, 384)
    assert model.sizes_seen == [1024, 768, 512, 384]


def test_ladder_starts_from_a_size_between_its_steps(rng: np.random.Generator) -> None:
    model = _ConstantAb(oom_above=256)
    result = colorize(model, rng.integers(0, 256, (40, 60), dtype=np.uint8), size=640)
    assert result.sizes_tried == (640, 512, 384, 256)


def test_out_of_memory_at_the_smallest_size_raises_with_the_sizes_tried(
    rng: np.random.Generator,
) -> None:
    model = _ConstantAb(oom_above=128)
    with pytest.raises(OutOfMemoryAtMinimumSize, match="512, 384, 256"):
        colorize(model, rng.integers(0, 256, (40, 60), dtype=np.uint8), size=512)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Let tensors 'move' to cuda:0 without a GPU, and record cache releases."""
    calls: list[str] = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    yield calls


def test_out_of_memory_on_cuda_empties_the_cache_before_each_retry(
    fake_cuda: list[str], rng: np.random.Generator
) -> None:
    model = _ConstantAb(oom_above=512)
    result = colorize(
        model,
        rng.integers(0, 256, (40, 60), dtype=np.uint8),
        size=1024,
        device="cuda:0",
        precision="fp32",
    )
    assert result.sizes_tried == (1024, 768, 512)
    assert fake_cuda == ["empty_cache", "empty_cache"]
    assert result.device == "cuda:0 (Fake GPU)" or result.device == "rocm:0 (Fake GPU)"


def test_non_finite_reduced_precision_output_is_redone_in_fp32(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    model = _ConstantAb(20, -10, nan_under_autocast=True)
    result = colorize(model, image, size=256, precision="bf16")
    assert result.precision == "fp32"
    assert model.sizes_seen == [256, 256]
    np.testing.assert_array_equal(
        result.image, colorize(_ConstantAb(20, -10), image, size=256).image
    )


def test_non_finite_fp32_output_fails_with_a_reason(rng: np.random.Generator) -> None:
    model = _ConstantAb(float("nan"), 0.0)
    with pytest.raises(DDColorError, match="NaN or infinite"):
        colorize(model, rng.integers(0, 256, (20, 30), dtype=np.uint8), size=256)


def test_finite_reduced_precision_output_is_kept(rng: np.random.Generator) -> None:
    model = _ConstantAb(20, -10, nan_under_autocast=False)
    result = colorize(
        model, rng.integers(0, 256, (50, 70), dtype=np.uint8), size=256, precision="bf16"
    )
    assert result.precision == "bf16"
    assert model.sizes_seen == [256]


@pytest.mark.slow
def test_bf16_on_cpu_gives_ab_close_to_fp32(tiny: nn.Module, photo: np.ndarray) -> None:
    x, _ = network_input(photo, 256, "opencv")
    with torch.inference_mode():
        reference = tiny(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = tiny(x).float()
    assert torch.isfinite(reduced).all()
    assert (reduced - reference).abs().max().item() < BF16_AB_TOLERANCE


@pytest.mark.parametrize("size", [255, 300, 224, 2080, 0, -512])
def test_sizes_outside_the_range_or_off_the_grid_are_rejected(size: int) -> None:
    with pytest.raises(InvalidSize):
        validate_size(size)


@pytest.mark.parametrize("size", [512.0, True, "512"])
def test_non_integer_sizes_are_rejected(size: object) -> None:
    with pytest.raises(InvalidSize):
        validate_size(size)  # type: ignore[arg-type]


def test_presets_and_ladder_are_the_documented_sizes() -> None:
    assert PRESETS == {"portrait": 512, "landscape": 1024}
    assert OOM_LADDER == (1024, 768, 512, 384, 256)
    assert size_ladder(2048) == (2048, 1024, 768, 512, 384, 256)
    assert size_ladder(1024) == (1024, 768, 512, 384, 256)
    assert size_ladder(256) == (256,)
    assert validate_size(np.int64(512)) == 512  # type: ignore[arg-type]


def test_images_of_other_types_or_shapes_are_rejected() -> None:
    model = _ConstantAb()
    with pytest.raises(TypeError, match="uint8 or uint16"):
        colorize(model, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        colorize(model, np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        colorize(model, np.zeros((0, 8), np.uint8))


def test_colorizer_applies_its_defaults_and_reports_provenance(rng: np.random.Generator) -> None:
    colorizer = Colorizer(
        _ConstantAb(1, 2),
        device="cpu",
        precision="fp32",
        size=384,
        upsample="bilinear",
        model_name="constant",
    )
    result = colorizer.colorize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    assert (result.size, result.upsample, result.precision) == (384, "bilinear", "fp32")
    assert result.device.startswith("cpu (")
    assert result.seconds >= result.network_seconds >= 0
    assert colorizer.colorize(np.zeros((4, 4), np.uint8), size=256).size == 256
    assert "constant" in repr(colorizer)


def test_colorizer_resolves_the_precision_asked_for_per_image(rng: np.random.Generator) -> None:
    colorizer = Colorizer(_ConstantAb(1, 2), device="cpu", precision="auto", size=256)
    image = rng.integers(0, 256, (8, 8), dtype=np.uint8)

    assert colorizer.precision == resolve_precision("auto", "cpu")
    assert colorizer.colorize(image, precision="bf16").precision == "bf16"
    assert colorizer.colorize(image, precision="auto").precision == colorizer.precision
    with pytest.raises(UnsupportedPrecision, match="fp8"):
        colorizer.colorize(image, precision="fp8")


def test_colorize_takes_only_a_resolved_precision() -> None:
    with pytest.raises(UnsupportedPrecision, match="Colorizer resolves auto"):
        colorize(_ConstantAb(), np.zeros((8, 8), np.uint8), size=256, precision="auto")


def test_untrained_colorizer_is_seeded_and_reproducible() -> None:
    first = load_colorizer(None, device="cpu", precision="auto", untrained=True)
    second = load_colorizer(None, device="cpu", untrained=True)
    assert first.model_name == "ddcolor_paper_tiny"
    assert first.precision == resolve_precision("auto", "cpu")
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_colorizer_loads_a_checkpoint_with_its_provenance(
    tmp_path: Path, tiny_model: nn.Module
) -> None:
    path = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": tiny_model.state_dict()}, path)
    colorizer = load_colorizer(path, device="cpu", precision="fp32", size=256)
    assert colorizer.checkpoint is not None
    assert colorizer.model_name == "ddcolor_paper_tiny"
    assert len(colorizer.checkpoint.sha256) == 64
    first = next(iter(tiny_model.state_dict().values()))
    assert torch.equal(next(iter(colorizer.model.state_dict().values())), first)


def test_colorizer_without_weights_explains_what_to_pass() -> None:
    with pytest.raises(CheckpointError, match="untrained=True"):
        load_colorizer(None, device="cpu")


# --------------------------------------------------------------------------- warm-up


def test_warm_up_colorizes_once_at_the_default_size() -> None:
    model = _ConstantAb(0.1, 0.2)
    colorizer = Colorizer(model, device="cpu", precision="fp32", size=320)

    seconds = colorizer.warm_up()

    assert model.sizes_seen == [320]
    assert seconds > 0


def test_warm_up_walks_the_size_ladder_and_reports_out_of_memory_at_its_floor() -> None:
    model = _ConstantAb(oom_above=0)

    with pytest.raises(OutOfMemoryAtMinimumSize):
        Colorizer(model, device="cpu", precision="fp32", size=512).warm_up()

    assert model.sizes_seen == [512, 384, 256]
