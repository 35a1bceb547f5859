"""Colorize one image with DDColor: input size, precision, the out-of-memory ladder, output.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) follows
the published inference pipeline:

1. the image as float32 in [0, 1]; its L at full resolution;
2. the image resized to a square input size (OpenCV INTER_LINEAR); the L of that, with a = b = 0,
   converted back to RGB: a grey RGB image is the network input;
3. the network predicts ab on the square grid; ab is brought back to the original height and
   width and joined with the original full-resolution L; Lab -> RGB; scaled and rounded.

8-bit images use OpenCV's colour arithmetic, reproduced in :mod:`ddcolor.transforms`, so they
come out as the published pipeline's do (``upsample="nearest"``). 16-bit images use the exact
formulas: their full 16-bit L is kept, never quantised to 8 bits or to OpenCV's table. The
full-resolution work runs in bands of rows, so memory stays near the size of the output.

Out of device memory, the network is retried at the next smaller size of
:data:`ddcolor.registry.OOM_LADDER`. The sizes, precisions and upsampling methods a caller
may name are defined in :mod:`ddcolor.registry`; a :class:`Colorizer` resolves the requested
precision (``auto`` included) for its device, once per name.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import CheckpointInfo, read_checkpoint
from ddcolor.colorspace import ColorMath, lab_to_rgb, rgb_to_lab
from ddcolor.composing import compose
from ddcolor.device import (
    describe_device,
    resolve_device,
    resolve_precision,
    tune_cpu_allocator,
)
from ddcolor.errors import (
    CheckpointError,
    NetworkOutOfMemory,
    OutOfMemoryAtMinimumSize,
    UnsupportedPrecision,
)
from ddcolor.registry import (
    DEFAULT_BACKEND,
    DEFAULT_COLOUR_OPS,
    DEFAULT_SIZE,
    DEFAULT_UPSAMPLE,
    PRECISIONS,
    UNTRAINED_MODEL,
    UpsampleMethod,
    size_ladder,
    validate_backend,
    validate_size,
    validate_upsample,
)
from ddcolor.runners import NetworkRunner, TorchRunner
from ddcolor.tensor_colour import DeviceImage, device_image, resolve_colour_ops
from ddcolor.transforms import resize_bilinear

if TYPE_CHECKING:
    from os import PathLike

    from torch import nn

logger = logging.getLogger(__name__)

#: Seed of the random weights of ``load_colorizer(untrained=True)``.
UNTRAINED_SEED = 0
#: Grey level (8-bit) of the blank image :meth:`Colorizer.warm_up` colorizes.
GREY_LEVEL = 128


@dataclass(frozen=True)
class ColorizeResult:
    """A colorized image and how it was made.

    Attributes:
        image: HxWx3 RGB, uint8 or uint16 like the input.
        size: Square input size the network ran at, in pixels.
        sizes_tried: Every size attempted, in order; all but the last ran out of memory.
        precision: Precision actually used: ``fp32`` when reduced precision produced
            non-finite ab and the image was redone.
        upsample: How ab was brought to full resolution.
        device: The device, e.g. ``cuda:0 (NVIDIA A100-SXM4-40GB)``.
        seconds: Wall time of the whole call, in seconds.
        network_seconds: Wall time of the successful network forward(s), in seconds.
    """

    image: np.ndarray
    size: int
    sizes_tried: tuple[int, ...]
    precision: str
    upsample: str
    device: str
    seconds: float
    network_seconds: float


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")


def network_input(image: np.ndarray, size: int, math: ColorMath) -> tuple[torch.Tensor, np.ndarray]:
    """Make the network input: the image resized to ``size`` square, as grey RGB of its L.

    Args:
        image: HxW or HxWx3, uint8 or uint16.
        size: Square side in pixels.
        math: Colour arithmetic (``opencv`` for 8-bit, ``exact`` for 16-bit).

    Returns:
        1x3xSxS float32 grey RGB in [0, 1], and the SxS float32 L it was made from.
    """
    small = resize_bilinear(image, (size, size))
    if small.ndim == 2:
        small = np.repeat(small[..., None], 3, axis=2)
    light = rgb_to_lab(small, math=math)[..., 0]
    grey = lab_to_rgb(np.stack([light, np.zeros_like(light), np.zeros_like(light)], -1), math=math)
    return torch.from_numpy(np.ascontiguousarray(grey.transpose(2, 0, 1)))[None], light


def colorize(
    model: nn.Module | NetworkRunner,
    image: np.ndarray,
    *,
    size: int = DEFAULT_SIZE,
    precision: str = "fp32",
    upsample: UpsampleMethod = DEFAULT_UPSAMPLE,
    device: str | torch.device | None = None,
    colour_ops: str = DEFAULT_COLOUR_OPS,
) -> ColorizeResult:
    """Colorize a black-and-white photograph.

    Args:
        model: DDColor in eval mode, taking Bx3xSxS RGB in [0, 1] and returning Bx2xSxS ab,
            or a runner of :mod:`ddcolor.runners` (torch eager, ONNX Runtime).
        image: HxW grey or HxWx3 RGB, uint8 or uint16. Only the L of RGB scans is used.
        size: Square input size in pixels; smaller sizes of
            :data:`ddcolor.registry.OOM_LADDER` are tried when the device runs out of memory.
        precision: ``fp32``, ``fp16`` or ``bf16``, as resolved for the device (a
            :class:`Colorizer` resolves ``auto``).
        upsample: How ab is brought to full resolution, one of
            :data:`ddcolor.registry.UPSAMPLE_METHODS`.
        device: Device to run a torch model on; None for the model's own (a runner has its
            own).
        colour_ops: Where the colour work around the network runs (``torch`` on its device,
            ``numpy`` on the host, ``auto``), see :mod:`ddcolor.tensor_colour`.

    Returns:
        The HxWx3 RGB image of the input's dtype, and its provenance.

    Raises:
        TypeError: If the image is not a uint8 or uint16 array.
        ValueError: If the image is not HxW or HxWx3, or an option is unknown.
        InvalidSize: If ``size`` is not valid.
        UnsupportedPrecision: If ``precision`` is not one of the three.
        OutOfMemoryAtMinimumSize: If the device runs out of memory at every size.
        DDColorError: If the network gives NaN or infinite ab even in fp32.
    """
    started = time.perf_counter()
    _check_image(image)
    upsample = validate_upsample(upsample)
    if precision not in PRECISIONS:
        raise UnsupportedPrecision(
            f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; a Colorizer "
            "resolves auto for its device"
        )
    sizes = size_ladder(size)
    # A bare model runs as it is: preparing it (ddcolor.prepared) pays off over many images,
    # which is what a Colorizer's runner is for.
    runner = (
        model if isinstance(model, NetworkRunner) else TorchRunner(model, device, prepared=False)
    )
    math: ColorMath = "opencv" if image.dtype == np.uint8 else "exact"
    on_device = device_image(image, runner.device, math, colour_ops)
    tried: list[int] = []
    for step in sizes:
        tried.append(step)
        x, light_small = _network_input(image, on_device, step, math)
        out_of_memory = False
        try:
            began = time.perf_counter()
            ab, used = runner.predict(x, precision)
            ab_small = ab[0].permute(1, 2, 0) if on_device else ab[0].permute(1, 2, 0).cpu()
            del ab
            network_seconds = time.perf_counter() - began
        except (NetworkOutOfMemory, torch.OutOfMemoryError):
            out_of_memory = True
        if not out_of_memory:
            break
        # Freed only here: inside the except block the traceback keeps the tensors alive.
        del x
        gc.collect()
        runner.release_memory()
        logger.warning("out of memory at input size %d on %s", step, runner.device)
    else:
        raise OutOfMemoryAtMinimumSize(
            f"out of memory on {runner.device} at every input size tried "
            f"({', '.join(map(str, tried))} px); free the device or run on the CPU"
        )
    output = _compose_anywhere(image, on_device, ab_small, light_small, math, upsample, runner)
    return ColorizeResult(
        image=output,
        size=tried[-1],
        sizes_tried=tuple(tried),
        precision=used,
        upsample=upsample,
        device=str(describe_device(runner.device)),
        seconds=time.perf_counter() - started,
        network_seconds=network_seconds,
    )


def _network_input(
    image: np.ndarray, on_device: DeviceImage | None, size: int, math: ColorMath
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input and its L, made on the device or on the host."""
    if on_device is not None:
        try:
            return on_device.network_input(size)
        except torch.OutOfMemoryError:
            logger.warning("out of memory making the %d px input on the device; on the host", size)
    x, light = network_input(image, size, math)
    return x, torch.from_numpy(light)


def _compose_anywhere(
    image: np.ndarray,
    on_device: DeviceImage | None,
    ab_small: torch.Tensor,
    light_small: torch.Tensor,
    math: ColorMath,
    upsample: UpsampleMethod,
    runner: NetworkRunner,
) -> np.ndarray:
    """The output, composed on the device; on the host where there is no room there."""
    if on_device is not None:
        try:
            return on_device.compose(ab_small, light_small, upsample)
        except torch.OutOfMemoryError:
            logger.warning("out of memory composing on %s; composing on the host", runner.device)
        runner.release_memory()
    ab_host, light_host = ab_small.cpu().numpy(), light_small.cpu().numpy()
    return _compose(image, ab_host, light_host, math, upsample)


def _compose(
    image: np.ndarray,
    ab_small: np.ndarray,
    light_small: np.ndarray,
    math: ColorMath,
    upsample: UpsampleMethod,
) -> np.ndarray:
    """Join the upsampled ab with the full-resolution L into HxWx3 RGB, on the host."""
    return compose(image, ab_small, light_small, math, upsample)


class Colorizer:
    """A loaded model with its device, precision and default input size.

    The precision is asked for by name (``auto``, ``fp32``, ``fp16``, ``bf16``) and resolved
    here, for this colorizer's device, once per name (:func:`ddcolor.device.resolve_precision`).
    On the CPU, the first colorizer tunes glibc's allocator for repeated forward passes
    (:func:`ddcolor.device.tune_cpu_allocator`).

    Args:
        model: DDColor in eval mode, already on ``device``.
        device: The device it runs on.
        precision: Default precision, by name; ``auto`` chooses by device.
        size: Default square input size in pixels.
        upsample: Default upsampling of ab.
        model_name: Registry name of the weights, for provenance.
        checkpoint: Provenance of the weights file, when loaded from one.
        runner: What runs the network (:mod:`ddcolor.runners`); None for torch eager on
            ``model``. A precision the runner lacks (ONNX Runtime runs fp32) resolves to fp32.
        colour_ops: Where the colour work around the network runs
            (:data:`ddcolor.registry.COLOUR_OPS`).

    Raises:
        InvalidSize: If ``size`` is not valid.
        UnsupportedPrecision: If ``precision`` is unknown or unsupported on the device.
        ValueError: If ``upsample`` or ``colour_ops`` is unknown.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        size: int = DEFAULT_SIZE,
        upsample: str = DEFAULT_UPSAMPLE,
        model_name: str | None = None,
        checkpoint: CheckpointInfo | None = None,
        runner: NetworkRunner | None = None,
        colour_ops: str = DEFAULT_COLOUR_OPS,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.runner: NetworkRunner = runner or TorchRunner(model, self.device)
        self._resolved: dict[str, str] = {}
        self.precision = self.resolve_precision(precision)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.size = validate_size(size)
        self.upsample: UpsampleMethod = validate_upsample(upsample)
        self.colour_ops = colour_ops
        resolve_colour_ops(colour_ops, self.device)  # refuses an unknown name now
        self.checkpoint = checkpoint
        self.model_name = model_name or (checkpoint.model_name if checkpoint else None)

    def resolve_precision(self, requested: str) -> str:
        """The precision a requested name means on this colorizer's device.

        Args:
            requested: ``auto``, ``fp32``, ``fp16`` or ``bf16``.

        Returns:
            ``fp32``, ``fp16`` or ``bf16``.

        Raises:
            UnsupportedPrecision: If the name is unknown or unsupported on the device.
        """
        resolved = self._resolved.get(requested)
        if resolved is None:
            resolved = resolve_precision(requested, self.device)
            if resolved not in self.runner.precisions:
                if requested != "auto":
                    logger.warning(
                        "the %s backend has no %s; running fp32", self.runner.name, resolved
                    )
                resolved = "fp32"
            self._resolved[requested] = resolved
        return resolved

    def warm_up(self) -> float:
        """Colorize a blank image at the default size once, and return how long it took.

        The first pass of a process is slower than the next ones: kernels are chosen and
        compiled for the input shape, memory pools filled, and on a GPU modules loaded and
        convolution algorithms picked. Every pass has the same shape (the default size),
        so one pass is enough. A long-running worker pays it at start.

        Returns:
            Seconds.

        Raises:
            OutOfMemoryAtMinimumSize: If the device has too little memory even at the
                smallest size.
            DDColorError: For other model failures.
        """
        began = time.perf_counter()
        self.colorize(np.full((self.size, self.size), GREY_LEVEL, dtype=np.uint8))
        return time.perf_counter() - began

    def colorize(
        self,
        image: np.ndarray,
        *,
        size: int | None = None,
        upsample: str | None = None,
        precision: str | None = None,
    ) -> ColorizeResult:
        """Colorize one image; see :func:`colorize` for the arguments, errors and result.

        Args:
            image: HxW grey or HxWx3 RGB, uint8 or uint16.
            size: Square input size in pixels; None for the default.
            upsample: Upsampling of ab; None for the default.
            precision: Precision by name (``auto`` included); None for the default.

        Returns:
            The HxWx3 RGB image of the input's dtype, and its provenance.
        """
        return colorize(
            self.runner,
            image,
            size=self.size if size is None else size,
            precision=self.precision if precision is None else self.resolve_precision(precision),
            upsample=self.upsample if upsample is None else validate_upsample(upsample),
            device=self.device,
            colour_ops=self.colour_ops,
        )

    def __repr__(self) -> str:
        """Summarise for logs."""
        return (
            f"Colorizer(model={self.model_name!r}, device={self.device}, "
            f"backend={self.runner.name}, "
            f"precision={self.precision}, size={self.size}, upsample={self.upsample})"
        )


def load_colorizer(
    weights: str | PathLike[str] | None,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    model: str | None = None,
    untrained: bool = False,
    size: int = DEFAULT_SIZE,
    upsample: str = DEFAULT_UPSAMPLE,
    backend: str = DEFAULT_BACKEND,
    onnx_cache: str | PathLike[str] | None = None,
) -> Colorizer:
    """Load a checkpoint into a :class:`Colorizer` on a device.

    Args:
        weights: Checkpoint file (see :func:`ddcolor.checkpoints.read_checkpoint`); ignored
            when ``untrained``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``; the colorizer resolves it.
        model: Registry name the checkpoint must hold (None: recognised from its shapes), or
            the model to build when ``untrained`` (default
            :data:`ddcolor.registry.UNTRAINED_MODEL`).
        untrained: Build random weights, seeded with :data:`UNTRAINED_SEED`, for demos and
            tests; the colours are meaningless.
        size: Default square input size in pixels.
        upsample: Default upsampling of ab.
        backend: What runs the network, one of :data:`ddcolor.registry.BACKENDS`: ``torch``
            (eager), or ``onnx`` (ONNX Runtime on the network exported once and cached, fp32;
            see :mod:`ddcolor.onnx_runner`).
        onnx_cache: Folder for ONNX exports that cannot sit beside the checkpoint (and of
            random weights); None for :func:`ddcolor.onnx_runner.default_cache_dir`.

    Returns:
        The colorizer; the network stays float32, reduced precision is applied by autocast.

    Raises:
        CheckpointError: If no weights are given, or the file is not a DDColor checkpoint.
        DDColorError: If the device does not exist here, or the ONNX backend cannot be set up.
        UnsupportedPrecision: If the precision is unknown or unsupported on the device.
        InvalidSize: If ``size`` is not valid.
        ValueError: If ``upsample`` is unknown.
    """
    target = resolve_device(device)
    validate_size(size)
    validate_upsample(upsample)
    backend = validate_backend(backend)
    # ONNX Runtime holds its own copy of the weights; the torch network stays on the CPU.
    home = target if backend == "torch" else torch.device("cpu")
    info: CheckpointInfo | None = None
    if untrained:
        name = model or UNTRAINED_MODEL
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            net = build_ddcolor(name, device="cpu").to(home)
        logger.warning("using untrained %s weights: the colours are meaningless", name)
    else:
        if weights is None:
            raise CheckpointError("no checkpoint given: pass the weights file, or untrained=True")
        state_dict, info = read_checkpoint(weights, model=model)
        net = build_ddcolor(model or info.arch, state_dict=state_dict, device=home)
        name = info.model_name
        logger.info(
            "loaded DDColor %s (%s) from %s, sha256 %s, on %s",
            info.model_name,
            info.arch,
            info.path,
            info.sha256,
            target,
        )
    runner: NetworkRunner | None = None
    if backend == "onnx":
        from ddcolor.onnx_runner import load_onnx_runner

        runner = load_onnx_runner(
            net, model_name=name, checkpoint=info, device=target, cache_dir=onnx_cache
        )
    return Colorizer(
        net,
        device=target,
        precision=precision,
        size=size,
        upsample=upsample,
        model_name=name,
        checkpoint=info,
        runner=runner,
    )
