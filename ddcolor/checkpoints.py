"""Reading and validating the official DDColor checkpoints: ``(state_dict, info)``.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence. Nothing here downloads weights: callers pass a local path.

The released files come in three layouts, all accepted unchanged:

- BasicSR ``.pth`` (and ModelScope ``.pt``): ``{"params": state_dict}``; ``params_ema`` is
  used only when ``params`` is absent;
- Hugging Face ``pytorch_model.bin``: the bare state dict;
- ``.safetensors``: the bare state dict.

:func:`read_checkpoint` reads a file with torch and returns the validated state dict with
a :class:`CheckpointInfo` provenance record (the file's SHA-256, the model's name);
:func:`ddcolor.build.build_ddcolor` builds the network and loads it strictly, and the
caller keeps the record. :func:`identify_checkpoint` makes the same record, with the same
checks, from the file's headers where it can, without importing torch, and takes the
file's SHA-256 from :mod:`ddcolor.digests` when this very file was hashed before (a load
always hashes the bytes it loads). PyTorch files are read with ``weights_only=True``, so a
file holding arbitrary Python objects is refused, never run. This module imports torch
only when it reads tensors.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from ddcolor.digests import remember_sha256, remembered_sha256
from ddcolor.errors import CheckpointError
from ddcolor.headers import file_format, read_record
from ddcolor.layout import Entry, Layout, check_layout, drop_unused, layout_of, unwrap
from ddcolor.registry import MODELS, ModelConfig, get_config

if TYPE_CHECKING:
    import torch

    #: A state dict: parameter and buffer names to tensors.
    StateDict = dict[str, torch.Tensor]

logger = logging.getLogger(__name__)

#: Bytes read per step while hashing a checkpoint file.
HASH_CHUNK_BYTES = 1 << 20
#: Parent directories (count) searched for a model name, for caches such as Hugging Face's
#: ``models--piddnad--ddcolor_paper/snapshots/<hash>/pytorch_model.bin``.
NAME_SEARCH_PARENTS = 3
#: Directory or file names that identify a model other than by its registry name: the
#: ModelScope hub model is the one published as ``ddcolor_modelscope``.
NAME_ALIASES = {"cv_ddcolor_image-colorization": "ddcolor_modelscope"}


@dataclass(frozen=True)
class CheckpointInfo:
    """Provenance of a checkpoint file that was checked to hold a DDColor model.

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


def identify_checkpoint(
    path: str | PathLike[str], *, model: str | ModelConfig | None = None
) -> CheckpointInfo:
    """Check a checkpoint file and return its provenance record, without loading it.

    The file's layout is read from its headers without torch where the format allows
    (:mod:`ddcolor.headers`); otherwise :func:`read_checkpoint` reads it. Either way the
    record and the errors are the ones ``read_checkpoint`` gives. The SHA-256 is the one
    remembered for this very file (same path, inode, size, modification and change
    times; :mod:`ddcolor.digests`) when there is one.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file.
        model: The model the file must hold (a :data:`~ddcolor.registry.MODELS` name,
            architecture key or config); None to recognise the architecture from the shapes.

    Returns:
        The record: model name, architecture, SHA-256, format.

    Raises:
        CheckpointError: If the file is missing, unreadable, not a state dict, or does not
            match the architecture.
        ValueError: If ``model`` is an unknown name.
    """
    file = _existing(path)
    config = get_config(model) if model is not None else None
    record = read_record(file)
    if isinstance(record, Mapping):
        inner, wrapper = unwrap(record)
        if isinstance(inner, Mapping) and all(
            isinstance(key, str) and isinstance(value, Entry) for key, value in inner.items()
        ):
            return _validate(file, inner, wrapper, config, remembered_sha256(file, sha256_file))
    _, info = read_checkpoint(file, model=config)
    return info


def read_checkpoint(
    path: str | PathLike[str], *, model: str | ModelConfig | None = None
) -> tuple[StateDict, CheckpointInfo]:
    """Read and validate a checkpoint file with torch.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file (other suffixes are
            recognised from their content).
        model: The model the file must hold (a :data:`~ddcolor.registry.MODELS` name,
            architecture key or config); None to recognise the architecture from the shapes.

    Returns:
        The validated state dict (unused keys dropped), ready for
        :func:`ddcolor.build.build_ddcolor`, and the file's provenance record.

    Raises:
        CheckpointError: If the file is missing, unreadable, not a state dict, or does not
            match the architecture.
        ValueError: If ``model`` is an unknown name.
    """
    import torch

    file = _existing(path)
    source = str(file)
    config = get_config(model) if model is not None else None
    record = _load_safetensors(file) if file_format(file) == "safetensors" else _load_torch(file)
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{source} is not a state dict: it holds a {type(record).__name__}")
    inner, wrapper = unwrap(record)
    where = f"{source}[{wrapper!r}]" if wrapper is not None else source
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"{where} is not a state dict: it holds a {type(inner).__name__}")
    for key, value in inner.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where} is not a state dict: entry {key!r} is a {type(value).__name__}, "
                "not a tensor"
            )
    # The bytes just loaded are hashed, never a remembered digest taken for them.
    digest = sha256_file(file)
    remember_sha256(file, digest)
    info = _validate(file, layout_of(inner), wrapper, config, digest)
    state_dict, _ = drop_unused(inner)
    return state_dict, info


def _existing(path: str | PathLike[str]) -> Path:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint file at {file}")
    return file


def _validate(
    file: Path,
    layout: Mapping[str, Entry],
    wrapper: str | None,
    model: ModelConfig | None,
    sha256: str,
) -> CheckpointInfo:
    """Check a file's layout (unused keys not yet dropped) and make its provenance record."""
    kept: Layout
    kept, dropped = drop_unused(layout)
    config = check_layout(kept, model, source=str(file))
    return CheckpointInfo(
        path=file,
        sha256=sha256,
        size_bytes=file.stat().st_size,
        model_name=config.name if model is not None else model_name_from_path(file, config.arch),
        arch=config.arch,
        format=file_format(file),
        wrapper=wrapper,
        dropped_keys=dropped,
    )


def _load_torch(file: Path) -> object:
    import torch

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


def _load_safetensors(file: Path) -> object:
    import safetensors
    import safetensors.torch

    try:
        return safetensors.torch.load_file(file, device="cpu")
    except (safetensors.SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{file} cannot be read as a safetensors file: it is truncated, damaged or not "
            f"safetensors ({exc})"
        ) from exc
