"""The released DDColor models and their two architectures, without importing torch.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence.

Two architectures exist: ``large`` (ConvNeXt-L encoder; checkpoints ``ddcolor_paper``,
``ddcolor_modelscope`` and ``ddcolor_artistic``) and ``tiny`` (ConvNeXt-T;
``ddcolor_paper_tiny``). Both use the released decoder settings: pixel-decoder width 512,
100 colour queries, 3 feature scales and 9 transformer layers, predicting 2 channels (ab).
This module is the one home of every model option a caller can name: the models, the
square input sizes (the rule, the presets, the out-of-memory ladder), the precisions and the
ab upsampling methods. It imports neither torch nor numpy, so command-line parsing and
``panchro submit`` read it cheaply; building a network is :mod:`ddcolor.build`'s job.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Literal

from ddcolor.errors import InvalidSize

#: Number of pixel-decoder scales (count) the colour decoder reads; fixed by the U-Net depth.
NUM_SCALES = 3


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one DDColor model.

    Attributes:
        name: Registry name, e.g. ``ddcolor_modelscope``, or an architecture key.
        arch: Architecture key, ``large`` or ``tiny``; models with the same key share
            parameter names and shapes.
        encoder_depths: Blocks per ConvNeXt stage.
        encoder_dims: Channels per ConvNeXt stage.
        nf: Width of the pixel decoder.
        num_queries: Colour queries.
        num_scales: Pixel-decoder scales used by the colour decoder (must be 3).
        dec_layers: Transformer layers of the colour decoder.
        num_output_channels: Output channels (2: a and b).
        hidden_dim: Transformer width.
        nheads: Attention heads.
        dim_feedforward: Hidden width of the transformer feed-forward layers.
        description: One line on what the weights were trained on.
    """

    name: str
    arch: str
    encoder_depths: tuple[int, int, int, int]
    encoder_dims: tuple[int, int, int, int]
    nf: int = 512
    num_queries: int = 100
    num_scales: int = NUM_SCALES
    dec_layers: int = 9
    num_output_channels: int = 2
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    description: str = ""

    def __post_init__(self) -> None:
        if self.num_scales != NUM_SCALES:
            raise ValueError(
                f"num_scales must be {NUM_SCALES} (one per pixel-decoder block), "
                f"got {self.num_scales}"
            )
        if self.nf % 2:
            raise ValueError(f"nf must be even, got {self.nf}")


#: Architectures, keyed by architecture name; each entry is also a valid model config.
ARCHITECTURES: dict[str, ModelConfig] = {
    "large": ModelConfig(
        name="large",
        arch="large",
        encoder_depths=(3, 3, 27, 3),
        encoder_dims=(192, 384, 768, 1536),
        description="DDColor-L (ConvNeXt-L encoder)",
    ),
    "tiny": ModelConfig(
        name="tiny",
        arch="tiny",
        encoder_depths=(3, 3, 9, 3),
        encoder_dims=(96, 192, 384, 768),
        description="DDColor-T (ConvNeXt-T encoder)",
    ),
}

#: The released checkpoints, keyed by their official names; the first is the default
#: (the upstream project recommends it).
MODELS: dict[str, ModelConfig] = {
    "ddcolor_modelscope": replace(
        ARCHITECTURES["large"],
        name="ddcolor_modelscope",
        description="DDColor-L trained on cleaned ImageNet; upstream's default",
    ),
    "ddcolor_paper": replace(
        ARCHITECTURES["large"],
        name="ddcolor_paper",
        description="DDColor-L trained on ImageNet; the model of the paper",
    ),
    "ddcolor_artistic": replace(
        ARCHITECTURES["large"],
        name="ddcolor_artistic",
        description="DDColor-L trained on ImageNet plus artistic images",
    ),
    "ddcolor_paper_tiny": replace(
        ARCHITECTURES["tiny"],
        name="ddcolor_paper_tiny",
        description="DDColor-T trained on ImageNet",
    ),
}


#: Official checkpoint names, the default first.
OFFICIAL_MODELS: tuple[str, ...] = tuple(MODELS)
#: Model built with random weights when none is named (the smallest).
UNTRAINED_MODEL = "ddcolor_paper_tiny"

#: Precisions the network can run in.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: Precision names a caller may ask for: ``auto`` (chosen per device, see
#: :func:`ddcolor.device.resolve_precision`) and the precisions.
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)

#: What runs the network (see :mod:`ddcolor.runners`): PyTorch eager, or ONNX Runtime on the
#: network exported to ONNX (fp32 only); the default first.
BACKENDS: tuple[str, ...] = ("torch", "onnx")
#: Backend used when none is given; the measurements are in docs/performance.md.
DEFAULT_BACKEND = "torch"

#: Where the colour work around the network runs (resize, Lab, ab upsampling, Lab -> RGB):
#: ``torch`` on the network's device (:mod:`ddcolor.tensor_colour`), ``numpy`` on the host,
#: ``auto`` torch on a GPU and numpy on the CPU (measurements in docs/performance.md).
COLOUR_OPS: tuple[str, ...] = ("auto", "torch", "numpy")
#: Colour work used when none is given.
DEFAULT_COLOUR_OPS = "auto"

#: How the predicted ab is brought to full resolution (see :mod:`ddcolor.transforms`).
UpsampleMethod = Literal["nearest", "bilinear", "bicubic", "guided"]
#: The upsampling methods, the default first.
UPSAMPLE_METHODS: tuple[UpsampleMethod, ...] = ("guided", "nearest", "bilinear", "bicubic")
#: Upsampling used when none is given: edge-aware, guided by the full-resolution L; chosen
#: from the measurements in docs/upsampling.md.
DEFAULT_UPSAMPLE: UpsampleMethod = "guided"

#: Square input size of the ``portrait`` preset, in pixels (practice: 460-680 for portraits).
PORTRAIT_SIZE = 512
#: Square input size of the ``landscape`` preset, in pixels (practice: 960-1280 for buildings
#: and landscapes).
LANDSCAPE_SIZE = 1024
#: Named input sizes, in pixels.
PRESETS: dict[str, int] = {"portrait": PORTRAIT_SIZE, "landscape": LANDSCAPE_SIZE}
#: Input size used when none is given, in pixels (the published pipeline's).
DEFAULT_SIZE = PORTRAIT_SIZE
#: Smallest input size accepted, in pixels; the network was trained on 256 px crops.
MIN_SIZE = 256
#: Largest input size accepted, in pixels.
MAX_SIZE = 2048
#: Input sizes must be multiples of this, in pixels: the encoder's total stride
#: (``ddcolor.modeling.ddcolor.SIZE_MULTIPLE``).
SIZE_STEP = 32
#: The size rule, as messages and help texts state it.
SIZE_RULE = f"a multiple of {SIZE_STEP} from {MIN_SIZE} to {MAX_SIZE}"
#: Input sizes tried after an out-of-memory error, largest first, in pixels; only those
#: smaller than the failed size are tried.
OOM_LADDER: tuple[int, ...] = (1024, 768, 512, 384, 256)


def validate_size(size: int) -> int:
    """Check a square input size against :data:`SIZE_RULE`.

    Args:
        size: Side in pixels (any integral type, numpy's included).

    Returns:
        The size, as an ``int``.

    Raises:
        InvalidSize: Unless it is a multiple of :data:`SIZE_STEP` from :data:`MIN_SIZE` to
            :data:`MAX_SIZE`.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise InvalidSize(f"input size must be an integer, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_STEP:
        raise InvalidSize(f"input size {size} is not {SIZE_RULE}")
    return int(size)


def size_ladder(size: int) -> tuple[int, ...]:
    """The sizes to try, in order: ``size``, then the smaller sizes of :data:`OOM_LADDER`.

    Args:
        size: Requested input size in pixels.

    Returns:
        Sizes in pixels, largest first.

    Raises:
        InvalidSize: If ``size`` is not valid.
    """
    size = validate_size(size)
    return (size, *(step for step in OOM_LADDER if step < size))


def validate_upsample(method: str) -> UpsampleMethod:
    """Check an upsampling method's name.

    Args:
        method: A name of :data:`UPSAMPLE_METHODS`.

    Returns:
        The name.

    Raises:
        ValueError: For any other name.
    """
    for known in UPSAMPLE_METHODS:
        if method == known:
            return known
    raise ValueError(f"unknown upsampling {method!r}; use one of {', '.join(UPSAMPLE_METHODS)}")


def validate_backend(backend: str) -> str:
    """Check a backend's name.

    Args:
        backend: A name of :data:`BACKENDS`.

    Returns:
        The name.

    Raises:
        ValueError: For any other name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return backend


def get_config(name_or_config: str | ModelConfig) -> ModelConfig:
    """Look up a model configuration.

    Args:
        name_or_config: A name of :data:`MODELS`, an architecture key of
            :data:`ARCHITECTURES`, or a :class:`ModelConfig` (returned as is).

    Returns:
        The configuration.

    Raises:
        ValueError: If the name is unknown.
    """
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    config = MODELS.get(name_or_config) or ARCHITECTURES.get(name_or_config)
    if config is None:
        known = ", ".join([*MODELS, *ARCHITECTURES])
        raise ValueError(f"unknown DDColor model {name_or_config!r}; known: {known}")
    return config
