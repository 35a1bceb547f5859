"""DDColor, the image colorization network, as a library: build, load, colorize.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and the released weights at github.com/piddnad/DDColor
(weights under the Apache-2.0 licence). This package is an independent implementation that
loads the released checkpoints unchanged. It knows nothing of queues, databases or S3.

    state_dict, info = read_checkpoint("ddcolor_modelscope.pth")    # validated, sha256
    model = build_ddcolor(info.arch, state_dict=state_dict, device="cuda")  # strict, eval
    colorizer = load_colorizer("ddcolor_modelscope.pth", precision="auto")  # both, on a device
    result = colorizer.colorize(gray)       # HxW uint8/uint16 -> HxWx3 RGB, same bit depth

The options a caller can name (models, sizes, precisions, upsampling) live in
:mod:`ddcolor.registry`, which, like this package's ``__init__``, imports no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddcolor.build import build_ddcolor
    from ddcolor.checkpoints import (
        CheckpointInfo,
        identify_checkpoint,
        read_checkpoint,
        sha256_file,
    )
    from ddcolor.device import DeviceInfo, describe_device, resolve_device, resolve_precision
    from ddcolor.errors import (
        CheckpointError,
        DDColorError,
        InvalidSize,
        OutOfMemoryAtMinimumSize,
        UnsupportedPrecision,
    )
    from ddcolor.modeling import DDColor
    from ddcolor.pipeline import Colorizer, ColorizeResult, colorize, load_colorizer
    from ddcolor.registry import (
        DEFAULT_SIZE,
        DEFAULT_UPSAMPLE,
        MODELS,
        OOM_LADDER,
        PRECISION_CHOICES,
        PRESETS,
        UPSAMPLE_METHODS,
        ModelConfig,
    )

#: Where each public name lives. Importing ``ddcolor.errors`` or ``ddcolor.registry`` (as the
#: CLI does) must not import torch, so the package imports its modules on first use.
_SOURCES = {
    "build_ddcolor": "build",
    "CheckpointInfo": "checkpoints",
    "identify_checkpoint": "checkpoints",
    "read_checkpoint": "checkpoints",
    "sha256_file": "checkpoints",
    "DeviceInfo": "device",
    "describe_device": "device",
    "resolve_device": "device",
    "resolve_precision": "device",
    "CheckpointError": "errors",
    "DDColorError": "errors",
    "InvalidSize": "errors",
    "OutOfMemoryAtMinimumSize": "errors",
    "UnsupportedPrecision": "errors",
    "DDColor": "modeling",
    "Colorizer": "pipeline",
    "ColorizeResult": "pipeline",
    "colorize": "pipeline",
    "load_colorizer": "pipeline",
    "DEFAULT_SIZE": "registry",
    "DEFAULT_UPSAMPLE": "registry",
    "MODELS": "registry",
    "OOM_LADDER": "registry",
    "PRECISION_CHOICES": "registry",
    "PRESETS": "registry",
    "UPSAMPLE_METHODS": "registry",
    "ModelConfig": "registry",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'ddcolor' has no attribute {name!r}")
    return getattr(import_module(f"ddcolor.{module}"), name)


__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "ColorizeResult",
    "Colorizer",
    "DDColor",
    "DDColorError",
    "DEFAULT_SIZE",
    "DEFAULT_UPSAMPLE",
    "DeviceInfo",
    "InvalidSize",
    "MODELS",
    "ModelConfig",
    "OOM_LADDER",
    "OutOfMemoryAtMinimumSize",
    "PRECISION_CHOICES",
    "PRESETS",
    "UPSAMPLE_METHODS",
    "UnsupportedPrecision",
    "build_ddcolor",
    "colorize",
    "describe_device",
    "identify_checkpoint",
    "load_colorizer",
    "read_checkpoint",
    "resolve_device",
    "resolve_precision",
    "sha256_file",
]
