"""What a DDColor state dict must hold: entry names, shapes and kinds of dtype, without torch.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence.

A checkpoint is checked by its *layout*: the names, shapes and dtypes of its entries,
compared with the official lists in ``ddcolor/layouts`` (taken from the upstream
implementation). The same checks serve a layout read from a file's headers
(:mod:`ddcolor.headers`, no torch) and one taken from loaded tensors
(:func:`ddcolor.checkpoints.read_checkpoint`), so both accept and refuse the same files with
the same messages. The vocabulary:

- :func:`unwrap`: BasicSR files keep the state dict under ``params`` (or ``params_ema``);
- :func:`drop_unused`: files of the first code release carry an unused classification head,
  ``encoder.arch.head_cls.weight`` and ``.bias``; those two keys, and nothing else, go;
- :func:`check_layout`: the architecture (``large`` or ``tiny``) is recognised from the
  shapes, and every key, shape and kind of dtype is compared with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any, NamedTuple, TypeVar

from ddcolor.errors import CheckpointError
from ddcolor.registry import ARCHITECTURES, ModelConfig

_V = TypeVar("_V")

#: Keys of the unused classification head carried by early checkpoints; dropped on load.
UNUSED_KEYS = ("encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias")
#: Keys under which BasicSR files wrap the state dict, most preferred first.
WRAPPER_KEYS = ("params", "params_ema")
#: Keys (count) of each kind of mismatch quoted in an error message.
REPORTED_KEYS = 5
#: The encoder's first convolution: its width tells the architectures apart.
STEM_KEY = "encoder.arch.downsample_layers.0.0.weight"
#: Floating-point dtype names.
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})


class Entry(NamedTuple):
    """One entry of a state dict, without its data.

    Attributes:
        shape: The tensor's shape.
        dtype: Its dtype's name without ``torch.``: ``float32``, ``bfloat16``, ``int64``...
    """

    shape: tuple[int, ...]
    dtype: str

    @property
    def floating(self) -> bool:
        """Whether the dtype is a floating-point one."""
        return self.dtype in FLOAT_DTYPES


#: A state dict's layout: entry names to shapes and dtypes.
Layout = dict[str, Entry]


@cache
def official_layout(arch: str) -> Layout:
    """Return the entries of an official architecture, from ``ddcolor/layouts``.

    Args:
        arch: ``large`` or ``tiny``.

    Returns:
        Key to entry, for every parameter and buffer of the released models.
    """
    text = resources.files("ddcolor").joinpath("layouts", f"ddcolor_{arch}.json").read_text()
    return {key: Entry(tuple(shape), dtype) for key, shape, dtype in json.loads(text)}


def is_official(config: ModelConfig) -> bool:
    """Whether a configuration has the structure of one of the official architectures.

    Args:
        config: A model configuration.

    Returns:
        True when it differs from its architecture's only in name and description, so
        that :func:`official_layout` describes it.
    """
    official = ARCHITECTURES.get(config.arch)
    return official is not None and (
        replace(config, name=official.name, description=official.description) == official
    )


def unwrap(record: Mapping[str, object]) -> tuple[object, str | None]:
    """Find the state dict in a checkpoint's record: under a BasicSR key, or the record.

    Args:
        record: What the file holds.

    Returns:
        The state dict (not checked), and the key of :data:`WRAPPER_KEYS` it was under.
    """
    wrapper = next((key for key in WRAPPER_KEYS if key in record), None)
    return (record[wrapper] if wrapper is not None else record), wrapper


def drop_unused(state: Mapping[str, _V]) -> tuple[dict[str, _V], tuple[str, ...]]:
    """Remove the unused classification-head keys (:data:`UNUSED_KEYS`), and only those.

    Args:
        state: A state dict, or its layout.

    Returns:
        A new mapping without them, and the keys that were removed.
    """
    dropped = tuple(key for key in UNUSED_KEYS if key in state)
    return {key: value for key, value in state.items() if key not in dropped}, dropped


def detect_arch(layout: Mapping[str, Entry], *, source: str = "checkpoint") -> str:
    """Recognise which DDColor architecture a layout belongs to.

    The stem convolution's width names the architecture (96 channels in ``tiny``, 192 in
    ``large``). Without it, each architecture scores the number of keys whose name and
    shape it expects, and a damaged file still scores highest with its own architecture
    so that :func:`check_layout` can name what is wrong.

    Args:
        layout: The state dict's entries, unused keys already dropped.
        source: Name of the file, for error messages.

    Returns:
        An architecture key of :data:`ddcolor.registry.ARCHITECTURES`.

    Raises:
        CheckpointError: If no key of any architecture is present with its shape.
    """
    stem = layout.get(STEM_KEY)
    if stem is not None:
        by_width = [
            arch
            for arch, config in ARCHITECTURES.items()
            if stem.shape == (config.encoder_dims[0], 3, 4, 4)
        ]
        if len(by_width) == 1:
            return by_width[0]
    scores = {
        arch: sum(
            1
            for key, entry in official_layout(arch).items()
            if key in layout and layout[key].shape == entry.shape
        )
        for arch in ARCHITECTURES
    }
    best = max(scores, key=lambda arch: scores[arch])
    if scores[best] == 0:
        sample = ", ".join(list(layout)[:REPORTED_KEYS]) or "none"
        raise CheckpointError(
            f"{source} is not a DDColor checkpoint: none of its {len(layout)} keys "
            f"is a DDColor parameter with the right shape (first keys: {sample})"
        )
    return best


def check_layout(
    layout: Mapping[str, Entry], model: ModelConfig | None, *, source: str = "checkpoint"
) -> ModelConfig:
    """Check that a layout is exactly that of a model (or of some official architecture).

    A configuration of another structure than the official ones is only known to the
    network built from it: its keys are checked against that network when the weights are
    loaded (:func:`ddcolor.build.build_ddcolor`).

    Args:
        layout: The state dict's entries, unused keys already dropped.
        model: The model the file must hold; None to recognise the architecture.
        source: Name of the file, for error messages.

    Returns:
        ``model``, or the recognised architecture's configuration.

    Raises:
        CheckpointError: Naming the missing, unexpected and mis-shaped keys (the first few
            of each, and how many there are), or the architecture found instead of
            ``model``'s.
    """
    if model is not None and not is_official(model):
        return model
    detected = detect_arch(layout, source=source)
    config = model or ARCHITECTURES[detected]
    if detected != config.arch:
        raise CheckpointError(
            f"{source} holds a {detected} DDColor, but {config.name} is {config.arch}"
        )
    target = config.name if config.name == config.arch else f"{config.name} ({config.arch})"
    compare_layout(layout, official_layout(config.arch), target=target, source=source)
    return config


def compare_layout(
    layout: Mapping[str, Entry],
    expected: Mapping[str, Entry],
    *,
    target: str,
    source: str = "checkpoint",
) -> None:
    """Check that a layout has exactly the expected keys, shapes and kinds of dtype.

    Args:
        layout: The state dict's entries, unused keys already dropped.
        expected: The model's entries.
        target: The model's name, for the message.
        source: Name of the file, for the message.

    Raises:
        CheckpointError: Naming the missing, unexpected and mis-shaped keys (the first few
            of each, and how many there are).
    """
    missing = [key for key in expected if key not in layout]
    unexpected = [key for key in layout if key not in expected]
    mismatched = []
    for key, want in expected.items():
        found = layout.get(key)
        if found is None:
            continue
        if found.shape != want.shape:
            mismatched.append(f"{key} is {list(found.shape)}, expected {list(want.shape)}")
        elif found.floating != want.floating:
            mismatched.append(f"{key} is {found.dtype}, expected {want.dtype}")
    if missing or unexpected or mismatched:
        problems = [
            _describe(missing, "missing key"),
            _describe(unexpected, "unexpected key"),
            _describe(mismatched, "mis-shaped key"),
        ]
        raise CheckpointError(
            f"{source} does not match DDColor {target}: "
            + "; ".join(problem for problem in problems if problem)
        )


def layout_of(tensors: Mapping[str, Any]) -> Layout:
    """Return the layout of loaded tensors (anything with ``shape`` and a torch ``dtype``).

    Args:
        tensors: A state dict.

    Returns:
        Its entries.
    """
    return {
        key: Entry(tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in tensors.items()
    }


def _describe(items: list[str], noun: str) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:REPORTED_KEYS])
    more = f", and {len(items) - REPORTED_KEYS} more" if len(items) > REPORTED_KEYS else ""
    plural = "s" if len(items) > 1 else ""
    return f"{len(items)} {noun}{plural} ({shown}{more})"
