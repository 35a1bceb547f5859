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
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ddcolor.build import ARCHITECTURES, MODELS, ModelConfig, create_model, get_config
from ddcolor.errors import CheckpointError, UnsupportedPrecision
from ddcolor.modeling.ddcolor import DDColor

logger = logging.getLogger(__name__)

#: Bytes read per step while hashing a checkpoint file.
HASH_CHUNK_BYTES = 1 << 20
#: Keys of the unused classification head carried by early checkpoints; dropped on load.
UNUSED_KEYS = ("encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias")
#: Keys under which BasicSR files wrap the state dict, most preferred first.
WRAPPER_KEYS = ("params", "params_ema")
#: Precision names accepted by :func:`load_model` and the parameter dtype of each.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
#: File suffixes read with ``torch.load``.
TORCH_SUFFIXES = frozenset({".pth", ".pt", ".bin", ".ckpt"})
#: File suffix read with ``safetensors``.
SAFETENSORS_SUFFIX = ".safetensors"
#: Keys (count) of each kind of mismatch quoted in an error message.
REPORTED_KEYS = 5
#: Parent directories (count) searched for a model name, for caches such as Hugging Face's
#: ``models--piddnad--ddcolor_paper/snapshots/<hash>/pytorch_model.bin``.
NAME_SEARCH_PARENTS = 3
#: Directory or file names that identify a model other than by its registry name: the
#: ModelScope hub model is the one published as ``ddcolor_modelscope``.
NAME_ALIASES = {"cv_ddcolor_image-colorization": "ddcolor_modelscope"}

#: The encoder's first convolution: its width tells the architectures apart.
_STEM_KEY = "encoder.arch.downsample_layers.0.0.weight"
#: A state dict: parameter and buffer names to tensors.
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """Provenance of the weights in a loaded model.

    Attributes:
        path: The checkpoint file as given.
        sha256: Hex SHA-256 of the file's bytes.
        size_bytes: File size in bytes.
        model_name: Registry name (e.g. ``ddcolor_modelscope``) when the file or its
            directories name one of the architecture's models, else the architecture key.
        arch: Architecture key, ``large`` or ``tiny``.
        format: ``torch`` (pickle/zip via ``torch.load``) or ``safetensors``.
        wrapper: ``params`` or ``params_ema`` for BasicSR files, None for bare state dicts.
        dropped_keys: Keys removed before loading (only the unused classification head).
    """

    path: Path
    sha256: str
    size_bytes: int
    model_name: str
    arch: str
    format: str
    wrapper: str | None
    dropped_keys: tuple[str, ...]


def sha256_file(path: str | PathLike[str]) -> str:
    """Return the hex SHA-256 of a file, read in chunks.

    Args:
        path: The file.

    Returns:
        64 lower-case hex digits.

    Raises:
        CheckpointError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return digest.hexdigest()


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
    wrapper = next((key for key in WRAPPER_KEYS if key in obj), None)
    inner = obj[wrapper] if wrapper is not None else obj
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
    dropped = tuple(key for key in UNUSED_KEYS if key in state_dict)
    kept = {key: value for key, value in state_dict.items() if key not in dropped}
    return kept, dropped


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


def detect_architecture(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> str:
    """Recognise which DDColor architecture a state dict belongs to.

    Each architecture scores the number of keys whose name and shape it expects; the
    encoder's widths (the stem is 96 channels wide in ``tiny``, 192 in ``large``) and the
    number of stage-2 blocks (9 or 27) separate them, and a damaged file still scores
    highest with its own architecture so the later check can name what is wrong.

    Args:
        state_dict: The state dict, unused keys already dropped.
        source: Name of the file, for error messages.

    Returns:
        An architecture key of :data:`ARCHITECTURES`.

    Raises:
        CheckpointError: If no key of any architecture is present with its shape.
    """
    # Fast path: the stem convolution's width names the architecture (96 tiny, 192
    # large) without building any model to learn the expected shapes.
    stem = state_dict.get(_STEM_KEY)
    if stem is not None:
        by_width = [
            arch
            for arch, config in ARCHITECTURES.items()
            if tuple(stem.shape) == (config.encoder_dims[0], 3, 4, 4)
        ]
        if len(by_width) == 1:
            return by_width[0]
    scores = {
        arch: sum(
            1
            for key, (shape, _) in expected_entries(config).items()
            if key in state_dict and tuple(state_dict[key].shape) == shape
        )
        for arch, config in ARCHITECTURES.items()
    }
    best = max(scores, key=lambda arch: scores[arch])
    if scores[best] == 0:
        sample = ", ".join(list(state_dict)[:REPORTED_KEYS]) or "none"
        raise CheckpointError(
            f"{source} is not a DDColor checkpoint: none of its {len(state_dict)} keys "
            f"is a DDColor parameter with the right shape (first keys: {sample})"
        )
    return best


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
    expected = expected_entries(config)
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = []
    for key, (shape, dtype) in expected.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        if tuple(value.shape) != shape:
            mismatched.append(f"{key} is {list(value.shape)}, expected {list(shape)}")
        elif value.is_floating_point() != dtype.is_floating_point:
            mismatched.append(f"{key} is {value.dtype}, expected {dtype}")
    if not (missing or unexpected or mismatched):
        return
    problems = [
        _describe(missing, "missing key"),
        _describe(unexpected, "unexpected key"),
        _describe(mismatched, "mis-shaped key"),
    ]
    target = config.name if config.name == config.arch else f"{config.name} ({config.arch})"
    raise CheckpointError(
        f"{source} does not match DDColor {target}: "
        + "; ".join(problem for problem in problems if problem)
    )


def read_checkpoint(
    path: str | PathLike[str], *, model: str | ModelConfig | None = None
) -> tuple[LoadedCheckpoint, StateDict]:
    """Read and validate a checkpoint file without building a model.

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
    file_format = _file_format(file)
    raw = _read_safetensors(file) if file_format == "safetensors" else _read_torch(file)
    state_dict, wrapper = unwrap_state_dict(raw, source=source)
    state_dict, dropped = drop_unused_keys(state_dict)
    if config is None:
        config = ARCHITECTURES[detect_architecture(state_dict, source=source)]
        model_name = model_name_from_path(file, config.arch)
    else:
        if config.arch in ARCHITECTURES:
            detected = detect_architecture(state_dict, source=source)
            if detected != config.arch:
                raise CheckpointError(
                    f"{source} holds a {detected} DDColor, but {config.name} is {config.arch}"
                )
        model_name = config.name
    check_state_dict(state_dict, config, source=source)
    info = LoadedCheckpoint(
        path=file,
        sha256=sha256_file(file),
        size_bytes=file.stat().st_size,
        model_name=model_name,
        arch=config.arch,
        format=file_format,
        wrapper=wrapper,
        dropped_keys=dropped,
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


def model_name_from_path(path: str | PathLike[str], arch: str) -> str:
    """Name the model in a checkpoint from its file name or the folders above it.

    A registry name of the same architecture counts when it stands as a whole word in the
    file name or in one of the nearest folders (as in Hugging Face's cache, with
    ``models--piddnad--ddcolor_paper/snapshots/<hash>/pytorch_model.bin``); ModelScope's
    ``cv_ddcolor_image-colorization`` folder means ``ddcolor_modelscope``.

    Args:
        path: The checkpoint file.
        arch: The architecture recognised from the file's shapes.

    Returns:
        The registry name, or ``arch`` when no name of that architecture appears.
    """
    file = Path(path)
    candidates = {name: name for name, config in MODELS.items() if config.arch == arch}
    candidates.update(
        {alias: name for alias, name in NAME_ALIASES.items() if MODELS[name].arch == arch}
    )
    # Longest first, so that ddcolor_paper_tiny is not read as ddcolor_paper.
    ordered = sorted(candidates, key=len, reverse=True)
    parts = [file.name, *(parent.name for parent in list(file.parents)[:NAME_SEARCH_PARENTS])]
    for part in parts:
        for token in ordered:
            if re.search(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9_])", part):
                return candidates[token]
    return arch


def _describe(items: list[str], noun: str) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:REPORTED_KEYS])
    more = f", and {len(items) - REPORTED_KEYS} more" if len(items) > REPORTED_KEYS else ""
    plural = "s" if len(items) > 1 else ""
    return f"{len(items)} {noun}{plural} ({shown}{more})"


def _file_format(file: Path) -> str:
    suffix = file.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    # A safetensors file starts with the little-endian length of its JSON header, then "{".
    try:
        with open(file, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {file}: {exc}") from exc
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    return "torch"


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
