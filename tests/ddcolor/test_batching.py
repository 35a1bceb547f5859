"""Tests of ddcolor.batching: one forward for several images, split on out-of-memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ddcolor.batching import BatchFit, colorize_batch, colorize_images, fit_of
from ddcolor.errors import DDColorError, OutOfMemoryAtMinimumSize
from ddcolor.pipeline import Colorizer, colorize
from ddcolor.runners import TorchRunner

#: Factor applied to the random tiny model's ab, so that its colours are visible.
AB_GAIN = 40.0


class _Recording(nn.Module):
    """Wraps a network: records each batch, and runs out of memory as told.

    Args:
        inner: The network.
        max_batch: Batches larger than this run out of memory (None: no limit).
        max_pixels: Batches whose count times side exceeds this run out of memory.
        nan_for: Give NaN ab for the batch rows whose mean input is below this.
    """

    def __init__(
        self,
        inner: nn.Module,
        *,
        max_batch: int | None = None,
        max_pixels: int | None = None,
        nan_for: float | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.nan_for = nan_for
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, side = int(x.shape[0]), int(x.shape[-1])
        self.calls.append((batch, side))
        if self.max_batch is not None and batch > self.max_batch:
            raise torch.OutOfMemoryError(f"injected: a batch of {batch}")
        if self.max_pixels is not None and batch * side > self.max_pixels:
            raise torch.OutOfMemoryError(f"injected: {batch} x {side} px")
        ab: torch.Tensor = self.inner(x) * AB_GAIN
        if self.nan_for is not None:
            dark = x.mean(dim=(1, 2, 3)) < self.nan_for
            ab[dark] = float("nan")
        return ab


class _Flat(nn.Module):
    """Constant ab everywhere (instant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 2, *x.shape[2:]) * 3.0


def _scans(count: int, seed: int = 3) -> list[np.ndarray]:
    """Grey and RGB, 8- and 16-bit images of different shapes (64-128 px)."""
    rng = np.random.default_rng(seed)
    shapes = [(64, 96), (128, 80), (100, 100, 3), (72, 120)]
    images = []
    for index in range(count):
        shape = shapes[index % len(shapes)]
        if index % 3 == 2:
            images.append(rng.integers(0, 65536, shape, dtype=np.uint16))
        else:
            images.append(rng.integers(0, 256, shape, dtype=np.uint8))
    return images


def test_one_forward_for_a_batch_gives_the_single_image_results(tiny_model: nn.Module) -> None:
    model = _Recording(tiny_model)
    images = _scans(4)

    batched = colorize_batch(model, images, size=256)
    singles = [colorize(model, image, size=256) for image in images]

    assert model.calls == [(4, 256)] + [(1, 256)] * 4
    for result, single, image in zip(batched, singles, images, strict=True):
        assert not isinstance(result, Exception)
        assert result.image.shape == image.shape[:2] + (3,)
        assert result.image.dtype == image.dtype
        assert (result.size, result.sizes_tried, result.precision) == (256, (256,), "fp32")
        # A batched convolution may round differently in the last bits.
        step = 1 if image.dtype == np.uint8 else 257
        diff = np.abs(result.image.astype(np.int64) - single.image.astype(np.int64))
        assert diff.max() <= step
        assert result.device == single.device and result.upsample == single.upsample


@pytest.mark.parametrize("colour_ops", ["torch", "numpy"])
def test_a_batch_does_the_colour_work_where_a_single_image_does(colour_ops: str) -> None:
    # torch colour ops are what a GPU worker runs; here the same code on the CPU device.
    model = _Recording(_Flat())
    images = _scans(3)

    batched = colorize_batch(model, images, size=256, fit=BatchFit(), colour_ops=colour_ops)

    for result, image in zip(batched, images, strict=True):
        assert not isinstance(result, Exception)
        single = colorize(model, image, size=256, colour_ops=colour_ops)
        np.testing.assert_array_equal(result.image, single.image)


def test_out_of_memory_splits_the_batch_before_shrinking_the_size() -> None:
    model = _Recording(_Flat(), max_batch=2)
    fit = BatchFit()

    results = colorize_batch(model, _scans(5), size=256, fit=fit)

    # 5 is too many; halves of 3 and 2; the 3 splits again into 2 and 1. All at 256.
    assert model.calls == [(5, 256), (3, 256), (2, 256), (1, 256), (2, 256)]
    assert [r.sizes_tried for r in results if not isinstance(r, Exception)] == [(256,)] * 5
    # What fits is remembered: the next batch at 256 is cut before it runs out.
    assert fit.limit(256) == 2 and fit.limit(512) > 2
    model.calls.clear()
    colorize_batch(model, _scans(4), size=256, fit=fit)
    assert model.calls == [(2, 256), (2, 256)]


def test_only_a_single_image_that_runs_out_of_memory_goes_down_the_ladder() -> None:
    # Four images fit at 256 px only one by one; one image fits at 512 px only... never.
    model = _Recording(_Flat(), max_pixels=384)

    results = colorize_batch(model, _scans(2), size=512, fit=BatchFit())

    assert model.calls == [(2, 512), (1, 512), (1, 384), (1, 512), (1, 384)]
    for result in results:
        assert not isinstance(result, Exception)
        assert (result.size, result.sizes_tried) == (384, (512, 384))


def test_an_image_out_of_memory_at_every_size_fails_alone() -> None:
    model = _Recording(_Flat(), max_pixels=255)

    results = colorize_batch(model, _scans(2), size=512, fit=BatchFit())

    for result in results:
        assert isinstance(result, OutOfMemoryAtMinimumSize)
        assert "512, 384, 256 px" in str(result)


def test_nan_in_fp32_fails_only_the_image_at_fault() -> None:
    images = [np.full((40, 60), level, dtype=np.uint8) for level in (200, 10, 220)]
    model = _Recording(_Flat(), nan_for=0.2)

    results = colorize_batch(model, images, size=256, fit=BatchFit())

    assert isinstance(results[1], DDColorError) and "NaN" in str(results[1])
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert model.calls == [(3, 256), (2, 256), (1, 256), (1, 256), (1, 256)]


def test_what_fits_is_learned_per_runner_and_used_by_colorize_images() -> None:
    model = _Recording(_Flat(), max_batch=2)
    colorizer = Colorizer(model, device="cpu", precision="fp32", size=256)

    colorize_images(colorizer, _scans(4))
    model.calls.clear()
    results = colorize_images(colorizer, _scans(4))

    assert model.calls == [(2, 256), (2, 256)]
    assert fit_of(colorizer.runner).limit(256) == 2
    assert fit_of(TorchRunner(model)).limit(256) > 2  # another runner learns on its own
    assert len(results) == 4


def test_colorize_images_of_one_image_is_colorize_and_raises_its_error() -> None:
    colorizer = Colorizer(_Recording(_Flat(), max_pixels=100), device="cpu", size=256)

    with pytest.raises(OutOfMemoryAtMinimumSize):
        colorize_images(colorizer, _scans(1))
