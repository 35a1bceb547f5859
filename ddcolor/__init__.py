"""DDColor, the image colorization network, as a library: build, load, colorize.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and the released weights at github.com/piddnad/DDColor
(weights under the Apache-2.0 licence). This package is an independent implementation that
loads the released checkpoints unchanged. It knows nothing of queues, databases or S3.

    model = load_model("ddcolor_modelscope.pth", device="cuda")     # strict, sha256 recorded
    colorizer = load_colorizer("ddcolor_modelscope.pth", precision="auto")
    result = colorizer.colorize(gray)       # HxW uint8/uint16 -> HxWx3 RGB, same bit depth
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddcolor.build import MODELS, ModelConfig, build_ddcolor
    from ddcolor.checkpoints import load_model, read_checkpoint
    from ddcolor.device import DeviceInfo, describe_device, resolve_device, resolve_precision
    from ddcolor.errors import (
        CheckpointError,
        DDColorError,
        InvalidSize,
        OutOfMemoryAtMinimumSize,
        UnsupportedPrecision,
    )
    from ddcolor.layout import LoadedCheckpoint, identify_checkpoint, sha256_file
    from ddcolor.modeling import DDColor
    from ddcolor.pipeline import (
        DEFAULT_SIZE,
        OOM_LADDER,
        PRESETS,
        Colorizer,
        ColorizeResult,
        colorize,
        load_colorizer,
    )
    from ddcolor.transforms import DEFAULT_UPSAMPLE, UPSAMPLE_METHODS

#: Where each public name lives. Importing ``ddcolor.errors`` (as the CLI does for its
#: error handling) must not import torch, so the package imports its modules on first use.
_SOURCES = {
    "MODELS": "build",
    "ModelConfig": "build",
    "build_ddcolor": "build",
    "LoadedCheckpoint": "layout",
    "identify_checkpoint": "layout",
    "load_model": "checkpoints",
    "read_checkpoint": "checkpoints",
    "sha256_file": "layout",
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
    "DEFAULT_SIZE": "pipeline",
    "OOM_LADDER": "pipeline",
    "PRESETS": "pipeline",
    "Colorizer": "pipeline",
    "ColorizeResult": "pipeline",
    "colorize": "pipeline",
    "load_colorizer": "pipeline",
    "DEFAULT_UPSAMPLE": "transforms",
    "UPSAMPLE_METHODS": "transforms",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'ddcolor' has no attribute {name!r}")
    return getattr(import_module(f"ddcolor.{module}"), name)


__all__ = [
    "DEFAULT_SIZE",
    "DEFAULT_UPSAMPLE",
    "MODELS",
    "OOM_LADDER",
    "PRESETS",
    "UPSAMPLE_METHODS",
    "CheckpointError",
    "ColorizeResult",
    "Colorizer",
    "DDColor",
    "DDColorError",
    "DeviceInfo",
    "InvalidSize",
    "LoadedCheckpoint",
    "ModelConfig",
    "OutOfMemoryAtMinimumSize",
    "UnsupportedPrecision",
    "build_ddcolor",
    "colorize",
    "describe_device",
    "load_colorizer",
    "load_model",
    "read_checkpoint",
    "resolve_device",
    "resolve_precision",
    "sha256_file",
    "identify_checkpoint",
]
