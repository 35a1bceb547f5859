"""Errors raised by ``ddcolor``.

The model is DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization
via Dual Decoders", ICCV 2023); upstream code and weights: github.com/piddnad/DDColor,
weights under the Apache-2.0 licence.

::

    DDColorError                  base class of everything below
    ├── CheckpointError           a weights file that is unreadable, damaged or not DDColor's
    ├── InvalidSize               an input size the network cannot take
    ├── NetworkOutOfMemory        one forward ran out of device memory (the ladder's signal)
    ├── OutOfMemoryAtMinimumSize  out of device memory even at the smallest input size
    └── UnsupportedPrecision      a precision name other than fp32, fp16 or bf16, or one
                                  the device cannot run

Each class names the stable failure code (``code``) recorded on an image that fails with
it; the catalog's ``catalog.reasons`` is the vocabulary these codes come from.
"""

from __future__ import annotations

from typing import ClassVar


class DDColorError(Exception):
    """Base class of every error raised by ``ddcolor``."""

    #: Failure code of an image that fails with this error (``catalog.reasons``).
    code: ClassVar[str] = "model.error"


class CheckpointError(DDColorError):
    """A checkpoint file cannot be used.

    The file is missing or unreadable, is not a state dict, or its parameter names or
    shapes do not match a DDColor architecture. The message names the file and the
    offending keys.
    """


class InvalidSize(DDColorError):
    """An input size the network cannot take.

    Height and width must be multiples of 32 (the encoder's total stride); the colorization
    pipeline further limits the square input size to its supported range.
    """


class NetworkOutOfMemory(DDColorError):
    """One forward pass ran out of device memory; the pipeline retries at a smaller size.

    Raised by every runner of :mod:`ddcolor.runners` (translating ``torch.OutOfMemoryError``
    or an execution provider's allocation failure) and caught by the pipeline's ladder.
    """


class OutOfMemoryAtMinimumSize(DDColorError):
    """The device ran out of memory even at the smallest input size of the ladder."""

    code: ClassVar[str] = "oom.floor"


class UnsupportedPrecision(DDColorError):
    """A precision name that is not one of ``fp32``, ``fp16`` or ``bf16``, or not the device's."""

    code: ClassVar[str] = "model.precision"
