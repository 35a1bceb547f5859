"""Reading, validating and loading the official DDColor checkpoints.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence. Nothing here downloads weights: callers pass a local path.

The released files come in three layouts, all accepted unchanged:

- BasicSR ``.pth`` (and ModelScope ``.pt``): ``{"params": state_dict}``; ``params_ema`` is
  used only when ``params`` is absent;
- Hugging Face ``pytorch_model.bin``: the bare state dict;
- ``.safetensors``: the bare state dict.

Files written by the first code release may also carry an unused classification head,
``encoder.arch.head_cls.weight`` and ``.bias``, that the network no longer defines; those
two keys, and nothing else, are dropped. The architecture (``large`` or ``tiny``) is
recognised from the parameter shapes, every key and shape is checked against it, and the
weights are then loaded with ``strict=True``. PyTorch files are read with
``weights_only=True``, so a file holding arbitrary Python objects is refused, never run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ddcolor.build import ARCHITECTURES, ModelConfig, create_model, get_config
from ddcolor.errors import CheckpointError, UnsupportedPrecision
from ddcolor.layout import (
    NAME_ALIASES,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    UNUSED_KEYS,
    WRAPPER_KEYS,
    Entry,
    Layout,
    LoadedCheckpoint,
    compare_layout,
    describe_checkpoint,
    describe_target,
    detect_arch,
    file_format,
    identify_checkpoint,
    is_official,
    model_name_from_path,
    official_layout,
    sha256_file,
    split_unused,
    wrapped_state,
)
from ddcolor.modeling.ddcolor import DDColor

__all__ = [
    "NAME_ALIASES",
    "PRECISIONS",
    "SAFETENSORS_SUFFIX",
    "TORCH_SUFFIXES",
    "UNUSED_KEYS",
    "WRAPPER_KEYS",
    "LoadedCheckpoint",
    "StateDict",
    "check_state_dict",
    "detect_architecture",
    "drop_unused_keys",
    "expected_entries",
    "expected_layout",
    "identify_checkpoint",
    "layout_of",
    "load_model",
    "model_name_from_path",
    "read_checkpoint",
    "resolve_precision",
    "sha256_file",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

#: Precision names accepted by :func:`load_model` and the parameter dtype of each.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
#: A state dict: parameter and buffer names to tensors.
StateDict = dict[str, torch.Tensor]


def resolve_precision(precision: str) -> torch.dtype:
    """Map a precision name to a dtype.

    Args:
        precision: ``fp32``, ``fp16`` or ``bf16``.

    Returns:
        The dtype.

    Raises:
        UnsupportedPrecision: For any other name.
    """
    try:
        return PRECISIONS[precision]
    except KeyError:
        known = ", ".join(PRECISIONS)
        raise UnsupportedPrecision(
            f"unsupported precision {precision!r}; use one of {known}"
        ) from None


def unwrap_state_dict(obj: object, *, source: str = "checkpoint") -> tuple[StateDict, str | None]:
    """Return the state dict inside a loaded checkpoint object.

    Args:
        obj: What ``torch.load`` or ``safetensors`` returned.
        source: Name of the file, for error messages.

    Returns:
        The state dict and the wrapper key it was found under (None for a bare state dict).

    Raises:
        CheckpointError: If ``obj`` is not a mapping of names to tensors.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} is not a state dict: it holds a {type(obj).__name__}")
    inner, wrapper = wrapped_state(obj)
    where = f"{source}[{wrapper!r}]" if wrapper is not None else source
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"{where} is not a state dict: it holds a {type(inner).__name__}")
    state_dict: StateDict = {}
    for key, value in inner.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where} is not a state dict: entry {key!r} is a {type(value).__name__}, "
                "not a tensor"
            )
        state_dict[key] = value
    return state_dict, wrapper


def drop_unused_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[StateDict, tuple[str, ...]]:
    """Remove the unused classification-head keys, and only those.

    Args:
        state_dict: A DDColor state dict.

    Returns:
        A new state dict without :data:`UNUSED_KEYS`, and the keys that were removed.
    """
    return split_unused(state_dict)


@functools.cache
def expected_entries(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Return the names, shapes and dtypes of a configuration's state dict.

    The model is built on the meta device, so this costs no memory and almost no time.

    Args:
        config: The model configuration.

    Returns:
        Key to ``(shape, dtype)`` for every parameter and buffer.
    """
    with torch.device("meta"):
        model = create_model(config)
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def layout_of(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """Return the names, shapes and dtypes of a state dict's tensors.

    Args:
        state_dict: A state dict.

    Returns:
        Its layout, as :mod:`ddcolor.layout` describes files.
    """
    return {
        key: Entry(tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in state_dict.items()
    }


def expected_layout(config: ModelConfig) -> Layout:
    """Return the layout a configuration's state dict has.

    Args:
        config: The model configuration.

    Returns:
        The official list for the two released architectures; for other configurations,
        the layout of a model built on the meta device.
    """
    if is_official(config):
        return official_layout(config.arch)
    return {
        key: Entry(shape, str(dtype).removeprefix("torch."))
        for key, (shape, dtype) in expected_entries(config).items()
    }


def detect_architecture(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> str:
    """Recognise which DDColor architecture a state dict belongs to.

    Args:
        state_dict: The state dict, unused keys already dropped.
        source: Name of the file, for error messages.

    Returns:
        An architecture key of :data:`ARCHITECTURES` (see :func:`ddcolor.layout.detect_arch`).

    Raises:
        CheckpointError: If no key of any architecture is present with its shape.
    """
    return detect_arch(layout_of(state_dict), source=source)


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig, *, source: str = "checkpoint"
) -> None:
    """Check that a state dict has exactly the keys, shapes and kinds of dtype of a model.

    Args:
        state_dict: The state dict, unused keys already dropped.
        config: The model configuration it must fit.
        source: Name of the file, for error messages.

    Raises:
        CheckpointError: Naming the missing, unexpected and mis-shaped keys (the first few
            of each, and how many there are).
    """
    compare_layout(
        layout_of(state_dict),
        expected_layout(config),
        target=describe_target(config),
        source=source,
    )


def read_checkpoint(
    path: str | PathLike[str], *, model: str | ModelConfig | None = None
) -> tuple[LoadedCheckpoint, StateDict]:
    """Read and validate a checkpoint file without building a model.

    :func:`ddcolor.layout.identify_checkpoint` does the same checks without reading the
    weights (or importing torch) where it can; this reads them.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file (other suffixes are
            recognised from their content).
        model: The model the file must hold (a :data:`MODELS` name, architecture key or
            config); None to recognise the architecture from the shapes.

    Returns:
        The provenance record and the validated state dict (unused keys dropped).

    Raises:
        CheckpointError: If the file is missing, unreadable, not a state dict, or does not
            match the architecture.
        ValueError: If ``model`` is an unknown name.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint file at {file}")
    source = str(file)
    config = get_config(model) if model is not None else None
    raw = _read_safetensors(file) if file_format(file) == "safetensors" else _read_torch(file)
    state_dict, wrapper = unwrap_state_dict(raw, source=source)
    state_dict, dropped = drop_unused_keys(state_dict)
    info = describe_checkpoint(
        file,
        layout_of(state_dict),
        wrapper=wrapper,
        dropped=dropped,
        model=config,
        expected=expected_layout,
    )
    return info, state_dict


def load_model(
    path: str | PathLike[str],
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    model: str | ModelConfig | None = None,
) -> DDColor:
    """Build DDColor from a checkpoint file, in eval mode, on a device and in a precision.

    The weights are loaded with ``strict=True`` into a model built without random
    initialisation. The returned model's ``checkpoint`` attribute holds the
    :class:`LoadedCheckpoint` provenance record.

    Args:
        path: The checkpoint file.
        device: Device to put the model on.
        precision: ``fp32``, ``fp16`` or ``bf16``: dtype of parameters and buffers.
        model: The model the file must hold; None to recognise it from the shapes.

    Returns:
        The model in eval mode.

    Raises:
        UnsupportedPrecision: If ``precision`` is not a known name.
        CheckpointError: If the file is missing, unreadable or not a DDColor checkpoint.
        ValueError: If ``model`` is an unknown name.
    """
    dtype = resolve_precision(precision)
    info, state_dict = read_checkpoint(path, model=model)
    config = get_config(model) if model is not None else ARCHITECTURES[info.arch]
    with torch.device("meta"):
        net = create_model(config)
    net.load_state_dict(state_dict, strict=True, assign=True)
    net.to(device=device, dtype=dtype)
    net.checkpoint = info
    logger.info(
        "loaded DDColor %s (%s) from %s, sha256 %s, %s on %s",
        info.model_name,
        info.arch,
        info.path,
        info.sha256,
        precision,
        device,
    )
    return net.eval()


def _read_torch(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch.load fails on damaged or foreign bytes with almost any exception type
        # (UnpicklingError, RuntimeError, OSError, EOFError, KeyError, struct.error, ...),
        # so every failure here is translated.
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{file} cannot be read as a PyTorch checkpoint with weights_only=True: it is "
            f"truncated, damaged, not a checkpoint, or holds objects other than tensors "
            f"({type(exc).__name__}: {first_line})"
        ) from exc


def _read_safetensors(file: Path) -> object:
    try:
        return safetensors.torch.load_file(file, device="cpu")
    except (safetensors.SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{file} cannot be read as a safetensors file: it is truncated, damaged or not "
            f"safetensors ({exc})"
        ) from exc
