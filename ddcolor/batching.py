"""Colorize several images with one forward of the network: a batch, split when memory runs out.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) sees
every image resized to the same square input size, so images of any shape can share one
forward: each image's network input is made as :func:`ddcolor.pipeline.colorize` makes it,
the inputs are stacked into one Bx3xSxS batch, one ``runner.predict`` gives Bx2xSxS ab, and
each image is composed at its own full resolution as a single image is. A GPU does several
images in barely more time than one; on a CPU the gain is small (see docs/performance.md).

Out of device memory, a batch is split in halves that are retried at the *same* input size
first; only a single image that still runs out of memory goes down the size ladder of
:data:`ddcolor.registry.OOM_LADDER`, exactly as :func:`~ddcolor.pipeline.colorize` does, and
the sizes it tried are its own. What fits is remembered per input size
(:class:`BatchFit`), so the next batch is cut to a size that fits instead of running out of
memory again. A batch whose forward gives NaN or infinite ab even in fp32 is split the same
way, so that only the image at fault fails.

Each image gets its own result, or its own error: :func:`colorize_batch` returns one entry
per image, a :class:`~ddcolor.pipeline.ColorizeResult` or the :class:`DDColorError` that
ended that image (:class:`OutOfMemoryAtMinimumSize`, NaN in fp32), in the images' order.

Two facts differ from colorizing the images one by one. When reduced precision gives
non-finite ab for one image of a batch, the runner redoes the whole batch in fp32, and each
of its images records ``fp32``: the precision it was in fact made in. And a batched forward
may round differently in the last bits (other convolution algorithms); the outputs agree
to within one level of 8 bits in tests.

The colour work around the network (the inputs, the composition) runs where
:func:`~ddcolor.pipeline.colorize` runs it (``colour_ops``: on a GPU, on the device), with
the same helpers. This module adds batching beside :mod:`ddcolor.pipeline` and changes
nothing in it.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import torch

from ddcolor.colorspace import ColorMath
from ddcolor.device import describe_device
from ddcolor.errors import (
    DDColorError,
    NetworkOutOfMemory,
    OutOfMemoryAtMinimumSize,
    UnsupportedPrecision,
)
from ddcolor.pipeline import ColorizeResult, _check_image, _compose_anywhere, _network_input
from ddcolor.registry import (
    DEFAULT_COLOUR_OPS,
    DEFAULT_SIZE,
    DEFAULT_UPSAMPLE,
    PRECISIONS,
    UpsampleMethod,
    size_ladder,
    validate_upsample,
)
from ddcolor.runners import NetworkRunner, TorchRunner
from ddcolor.tensor_colour import DeviceImage, device_image

if TYPE_CHECKING:
    from torch import nn

    from ddcolor.pipeline import Colorizer

__all__ = ["MAX_BATCH", "BatchFit", "colorize_batch", "colorize_images", "fit_of"]

logger = logging.getLogger(__name__)

#: Most images in one forward; larger requests are cut into batches of this many.
MAX_BATCH: Final = 64

#: One image's result, or the error that ended it.
BatchEntry = ColorizeResult | DDColorError


class BatchFit:
    """The largest batch known to fit in device memory, per input size.

    Learned from out-of-memory errors: a batch of ``n`` that runs out of memory at a size
    limits later batches at that size to ``ceil(n / 2)``. It never grows back (a process
    that is recycled after repeated out-of-memory errors starts afresh).
    """

    def __init__(self) -> None:
        self._limits: dict[int, int] = {}

    def limit(self, size: int) -> int:
        """Return the most images to put in one forward at an input size.

        Args:
            size: Square input size in pixels.

        Returns:
            A count, at least 1.
        """
        return self._limits.get(size, MAX_BATCH)

    def ran_out(self, size: int, batch: int) -> None:
        """Note that a batch of ``batch`` images ran out of memory at ``size``.

        Args:
            size: Square input size in pixels.
            batch: Images in the batch that failed (at least 2).
        """
        limit = max(1, (batch + 1) // 2)
        if limit < self.limit(size):
            self._limits[size] = limit
            logger.info("batches at %d px are cut to %d image(s) from now on", size, limit)


#: What each runner has learned; dropped with the runner.
_FITS: weakref.WeakKeyDictionary[NetworkRunner, BatchFit] = weakref.WeakKeyDictionary()


def fit_of(runner: NetworkRunner) -> BatchFit:
    """Return what is known to fit for a runner (made on first use, kept with the runner).

    Args:
        runner: What runs the network.

    Returns:
        Its :class:`BatchFit`.
    """
    fit = _FITS.get(runner)
    if fit is None:
        fit = _FITS[runner] = BatchFit()
    return fit


@dataclass
class _Item:
    """One image of the batch: its inputs per size, the sizes it tried, its result."""

    image: np.ndarray
    math: ColorMath
    on_device: DeviceImage | None
    tried: list[int] = field(default_factory=list)
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0
    entry: BatchEntry | None = None

    def network_input(self, size: int) -> torch.Tensor:
        """The 1x3xSxS input at a size, made once (timed into this image's seconds)."""
        if size not in self.inputs:
            began = time.perf_counter()
            self.inputs = {size: _network_input(self.image, self.on_device, size, self.math)}
            self.seconds += time.perf_counter() - began
        return self.inputs[size][0]


def colorize_batch(
    model: nn.Module | NetworkRunner,
    images: Sequence[np.ndarray],
    *,
    size: int = DEFAULT_SIZE,
    precision: str = "fp32",
    upsample: UpsampleMethod = DEFAULT_UPSAMPLE,
    device: str | torch.device | None = None,
    fit: BatchFit | None = None,
    colour_ops: str = DEFAULT_COLOUR_OPS,
) -> list[BatchEntry]:
    """Colorize black-and-white photographs, several per forward of the network.

    Args:
        model: DDColor in eval mode, or a runner of :mod:`ddcolor.runners`.
        images: Each HxW grey or HxWx3 RGB, uint8 or uint16; shapes may differ.
        size: Square input size in pixels, the same for every image; smaller sizes of
            :data:`ddcolor.registry.OOM_LADDER` are tried per image when a single image
            runs out of memory.
        precision: ``fp32``, ``fp16`` or ``bf16``, as resolved for the device.
        upsample: How ab is brought to full resolution.
        device: Device to run a torch model on; None for the model's own.
        fit: What is known to fit, to cut batches by and to learn into; None for the
            runner's own (:func:`fit_of`).
        colour_ops: Where the colour work around the network runs (``torch`` on its device,
            ``numpy`` on the host, ``auto``), per image as in
            :func:`~ddcolor.pipeline.colorize`.

    Returns:
        One entry per image, in order: its result (the HxWx3 RGB image of its dtype and its
        provenance, ``seconds`` being its own preparation and composition plus its share
        of each forward it was part of), or the :class:`DDColorError` that ended it
        (:class:`OutOfMemoryAtMinimumSize`, NaN or infinite ab in fp32).

    Raises:
        TypeError: If an image is not a uint8 or uint16 array.
        ValueError: If an image is not HxW or HxWx3, or ``upsample`` is unknown.
        InvalidSize: If ``size`` is not valid.
        UnsupportedPrecision: If ``precision`` is not one of the three.
    """
    if precision not in PRECISIONS:
        raise UnsupportedPrecision(f"a batch runs in {', '.join(PRECISIONS)}, not {precision!r}")
    for image in images:
        _check_image(image)
    upsample = validate_upsample(upsample)
    sizes = size_ladder(size)
    runner = (
        model if isinstance(model, NetworkRunner) else TorchRunner(model, device, prepared=False)
    )
    fit = fit or fit_of(runner)
    described = str(describe_device(runner.device))
    items = []
    for image in images:
        math: ColorMath = "opencv" if image.dtype == np.uint8 else "exact"
        on_device = device_image(image, runner.device, math, colour_ops)
        items.append(_Item(image, math, on_device, [sizes[0]]))
    step = max(1, min(fit.limit(sizes[0]), MAX_BATCH))
    work: deque[tuple[list[_Item], int]] = deque(
        (items[start : start + step], 0) for start in range(0, len(items), step)
    )
    while work:
        group, rung = work.popleft()
        done = _forward(runner, group, sizes, rung, precision, upsample, described, fit)
        if done is not None:
            work.extendleft(reversed(done))
    entries = [item.entry for item in items]
    assert all(entry is not None for entry in entries)
    return [entry for entry in entries if entry is not None]


def _forward(
    runner: NetworkRunner,
    group: list[_Item],
    sizes: tuple[int, ...],
    rung: int,
    precision: str,
    upsample: UpsampleMethod,
    described: str,
    fit: BatchFit,
) -> list[tuple[list[_Item], int]] | None:
    """Run one group at one rung of the ladder; return what is left to run, if anything."""
    size = sizes[rung]
    inputs = [item.network_input(size) for item in group]
    # An input made on the host (no room on the device) joins the others where they are.
    x = torch.cat([single.to(inputs[0].device) for single in inputs])
    del inputs
    began = time.perf_counter()
    failure: DDColorError | None = None
    out_of_memory = False
    try:
        ab, used = runner.predict(x, precision)
        ab_small = ab.permute(0, 2, 3, 1)
        del ab
    except (NetworkOutOfMemory, torch.OutOfMemoryError):
        out_of_memory = True
    except DDColorError as exc:
        failure = exc
    share = (time.perf_counter() - began) / len(group)
    for item in group:
        item.seconds += share
    if out_of_memory or failure is not None:
        # Freed only here: inside the except block the traceback keeps the tensors alive.
        del x
        gc.collect()
        runner.release_memory()
        return _after_failure(runner, group, sizes, rung, fit, failure)
    for index, item in enumerate(group):
        began = time.perf_counter()
        light_small = item.inputs[size][1]
        ab_item = ab_small[index] if item.on_device is not None else ab_small[index].cpu()
        image = _compose_anywhere(
            item.image, item.on_device, ab_item, light_small, item.math, upsample, runner
        )
        item.seconds += time.perf_counter() - began
        item.inputs = {}
        item.entry = ColorizeResult(
            image=image,
            size=size,
            sizes_tried=tuple(item.tried),
            precision=used,
            upsample=upsample,
            device=described,
            seconds=item.seconds,
            network_seconds=share,
        )
    return None


def _after_failure(
    runner: NetworkRunner,
    group: list[_Item],
    sizes: tuple[int, ...],
    rung: int,
    fit: BatchFit,
    failure: DDColorError | None,
) -> list[tuple[list[_Item], int]] | None:
    """Split a failed batch in halves at the same size, or move a single image down."""
    size = sizes[rung]
    if len(group) > 1:
        if failure is None:
            fit.ran_out(size, len(group))
            logger.warning(
                "out of memory for a batch of %d at input size %d on %s; splitting it",
                len(group),
                size,
                runner.device,
            )
        else:
            logger.warning("batch of %d failed (%s); splitting it", len(group), failure)
        half = (len(group) + 1) // 2
        return [(group[:half], rung), (group[half:], rung)]
    (item,) = group
    if failure is not None:
        item.entry = failure
        return None
    logger.warning("out of memory at input size %d on %s", size, runner.device)
    if rung + 1 < len(sizes):
        item.tried.append(sizes[rung + 1])
        return [([item], rung + 1)]
    item.entry = OutOfMemoryAtMinimumSize(
        f"out of memory on {runner.device} at every input size tried "
        f"({', '.join(map(str, item.tried))} px); free the device or run on the CPU"
    )
    return None


def colorize_images(
    colorizer: Colorizer,
    images: Sequence[np.ndarray],
    *,
    size: int | None = None,
    upsample: str | None = None,
    precision: str | None = None,
) -> list[BatchEntry]:
    """Colorize images in batches with a colorizer's defaults (see :func:`colorize_batch`).

    A single image goes through :meth:`Colorizer.colorize` unchanged, its error raised
    rather than returned.

    Args:
        colorizer: The loaded model.
        images: Each HxW grey or HxWx3 RGB, uint8 or uint16.
        size: Square input size in pixels; None for the colorizer's default.
        upsample: Upsampling of ab; None for the colorizer's default.
        precision: Precision by name (``auto`` included); None for the colorizer's default.

    Returns:
        One result or error per image, in order.

    Raises:
        OutOfMemoryAtMinimumSize: For a single image, as :meth:`Colorizer.colorize`.
        DDColorError: For a single image, as :meth:`Colorizer.colorize`.
    """
    if len(images) == 1:
        return [colorizer.colorize(images[0], size=size, upsample=upsample, precision=precision)]
    return colorize_batch(
        colorizer.runner,
        images,
        size=colorizer.size if size is None else size,
        precision=colorizer.precision
        if precision is None
        else colorizer.resolve_precision(precision),
        upsample=colorizer.upsample if upsample is None else validate_upsample(upsample),
        device=colorizer.device,
        colour_ops=colorizer.colour_ops,
    )
