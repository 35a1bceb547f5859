"""What a DDColor checkpoint holds, read without torch: entry names, shapes and dtypes.

``panchro submit`` records which checkpoint a collection is meant for (its model name and
SHA-256) after checking that the file really is that model. Nothing of the network is
needed for that, only the file's layout: the names, shapes and dtypes of its entries,
compared with the official lists in ``ddcolor/layouts``. This module reads the layout
straight from the file, without importing torch (about 1.5 s and 400 MB before the first
byte is read):

- PyTorch zip files (``torch.save`` since 1.6; the released ``.pth``, ``.pt`` and
  ``pytorch_model.bin``): the pickled record in ``data.pkl`` is read by an unpickler that
  knows only the handful of names a state dict uses (``OrderedDict``, tensor rebuilds,
  storage types) and refuses everything else, so nothing in the file is ever run. Tensor
  data is not read; each storage is checked to be present with its full size.
- safetensors: the JSON header, with every tensor's byte range checked against the file.

Anything else (the legacy pickle format, unknown names, damaged archives) is left to
:func:`ddcolor.checkpoints.read_checkpoint`, which reads the file with torch and says
precisely what is wrong with it. Both paths share the checks below, so they accept and
refuse the same files with the same messages.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ddcolor.errors import CheckpointError
from ddcolor.registry import ARCHITECTURES, MODELS, ModelConfig, get_config

logger = logging.getLogger(__name__)

_V = TypeVar("_V")

#: Bytes read per step while hashing a checkpoint file.
HASH_CHUNK_BYTES = 1 << 20
#: Keys of the unused classification head carried by early checkpoints; dropped on load.
UNUSED_KEYS = ("encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias")
#: Keys under which BasicSR files wrap the state dict, most preferred first.
WRAPPER_KEYS = ("params", "params_ema")
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
STEM_KEY = "encoder.arch.downsample_layers.0.0.weight"
#: Largest safetensors header read, in bytes (the safetensors library's own limit).
MAX_HEADER_BYTES = 100_000_000
#: Floating-point dtype names.
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})
#: Bytes per element of each dtype a checkpoint may hold.
ITEM_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
#: PyTorch's pickled storage class names and their dtypes.
TORCH_STORAGES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
#: safetensors dtype codes and their dtypes.
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


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


def file_format(file: Path) -> str:
    """Tell a checkpoint's format from its suffix, or from its first bytes.

    Args:
        file: The checkpoint.

    Returns:
        ``safetensors`` or ``torch``.

    Raises:
        CheckpointError: If the file cannot be read.
    """
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


def describe_target(config: ModelConfig) -> str:
    """Name a configuration in messages: ``tiny``, or ``ddcolor_paper (large)``."""
    return config.name if config.name == config.arch else f"{config.name} ({config.arch})"


def detect_arch(layout: Mapping[str, Entry], *, source: str = "checkpoint") -> str:
    """Recognise which DDColor architecture a layout belongs to.

    The stem convolution's width names the architecture (96 channels in ``tiny``, 192 in
    ``large``). Without it, each architecture scores the number of keys whose name and
    shape it expects, and a damaged file still scores highest with its own architecture
    so that the later check can name what is wrong.

    Args:
        layout: The state dict's entries, unused keys already dropped.
        source: Name of the file, for error messages.

    Returns:
        An architecture key of :data:`ARCHITECTURES`.

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
    if not (missing or unexpected or mismatched):
        return
    problems = [
        _describe(missing, "missing key"),
        _describe(unexpected, "unexpected key"),
        _describe(mismatched, "mis-shaped key"),
    ]
    raise CheckpointError(
        f"{source} does not match DDColor {target}: "
        + "; ".join(problem for problem in problems if problem)
    )


def describe_checkpoint(
    file: Path,
    layout: Mapping[str, Entry],
    *,
    wrapper: str | None,
    dropped: tuple[str, ...],
    model: ModelConfig | None,
    expected: Callable[[ModelConfig], Mapping[str, Entry]] | None = None,
) -> LoadedCheckpoint:
    """Check a checkpoint's layout against its model and make its provenance record.

    Args:
        file: The checkpoint file.
        layout: Its state dict's entries, unused keys already dropped.
        wrapper: The BasicSR key the state dict was found under, if any.
        dropped: The unused keys that were dropped.
        model: The model the file must hold; None to recognise it from the shapes.
        expected: The entries of a configuration; None for :func:`official_layout`.

    Returns:
        The record, with the file's SHA-256.

    Raises:
        CheckpointError: If the layout is not that of the model (or of any DDColor).
    """
    source = str(file)
    config = model
    if config is None:
        config = ARCHITECTURES[detect_arch(layout, source=source)]
        model_name = model_name_from_path(file, config.arch)
    else:
        if config.arch in ARCHITECTURES:
            detected = detect_arch(layout, source=source)
            if detected != config.arch:
                raise CheckpointError(
                    f"{source} holds a {detected} DDColor, but {config.name} is {config.arch}"
                )
        model_name = config.name
    wanted = expected(config) if expected is not None else official_layout(config.arch)
    compare_layout(layout, wanted, target=describe_target(config), source=source)
    return LoadedCheckpoint(
        path=file,
        sha256=sha256_file(file),
        size_bytes=file.stat().st_size,
        model_name=model_name,
        arch=config.arch,
        format=file_format(file),
        wrapper=wrapper,
        dropped_keys=dropped,
    )


def identify_checkpoint(
    path: str | PathLike[str], *, model: str | ModelConfig | None = None
) -> LoadedCheckpoint:
    """Check a checkpoint file and return its provenance record, without loading it.

    The file's layout is read without torch where the format allows (see the module's
    description); otherwise :func:`ddcolor.checkpoints.read_checkpoint` reads it. Either
    way the record and the errors are the ones ``read_checkpoint`` gives.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file.
        model: The model the file must hold (a :data:`MODELS` name, architecture key or
            config); None to recognise the architecture from the shapes.

    Returns:
        The record: model name, architecture, SHA-256, format.

    Raises:
        CheckpointError: If the file is missing, unreadable, not a state dict, or does not
            match the architecture.
        ValueError: If ``model`` is an unknown name.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint file at {file}")
    config = get_config(model) if model is not None else None
    quick = read_layout(file) if config is None or is_official(config) else None
    if quick is None:
        from ddcolor.checkpoints import read_checkpoint  # imports torch

        info, _ = read_checkpoint(file, model=config)
        return info
    layout, wrapper, dropped = quick
    return describe_checkpoint(file, layout, wrapper=wrapper, dropped=dropped, model=config)


def wrapped_state(record: Mapping[str, object]) -> tuple[object, str | None]:
    """Find the state dict in a checkpoint's record: under a BasicSR key, or the record.

    Args:
        record: What the file holds.

    Returns:
        The state dict (not checked), and the key of :data:`WRAPPER_KEYS` it was under.
    """
    wrapper = next((key for key in WRAPPER_KEYS if key in record), None)
    return (record[wrapper] if wrapper is not None else record), wrapper


def split_unused(state: Mapping[str, _V]) -> tuple[dict[str, _V], tuple[str, ...]]:
    """Remove the unused classification-head keys (:data:`UNUSED_KEYS`), and only those.

    Args:
        state: A state dict, or its layout.

    Returns:
        A new mapping without them, and the keys that were removed.
    """
    dropped = tuple(key for key in UNUSED_KEYS if key in state)
    return {key: value for key, value in state.items() if key not in dropped}, dropped


def read_layout(file: Path) -> tuple[Layout, str | None, tuple[str, ...]] | None:
    """Read a checkpoint's layout without torch, where the format allows it.

    Args:
        file: The checkpoint.

    Returns:
        The layout with the unused keys dropped, the BasicSR wrapper key (or None) and the
        dropped keys; None when this reader cannot tell (torch then reads the file).

    Raises:
        CheckpointError: If the file cannot be read at all.
    """
    try:
        if file_format(file) == "safetensors":
            record: object = _read_safetensors_header(file)
        else:
            record = _read_torch_zip(file)
    except _Unreadable as exc:
        logger.debug("%s: read with torch instead: %s", file, exc)
        return None
    if not isinstance(record, Mapping):
        return None
    inner, wrapper = wrapped_state(record)
    if not isinstance(inner, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Entry) for key, value in inner.items()
    ):
        return None
    layout, dropped = split_unused(inner)
    return layout, wrapper, dropped


class _Unreadable(Exception):
    """The quick reader cannot tell what the file holds; torch must read it."""


def _describe(items: list[str], noun: str) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:REPORTED_KEYS])
    more = f", and {len(items) - REPORTED_KEYS} more" if len(items) > REPORTED_KEYS else ""
    plural = "s" if len(items) > 1 else ""
    return f"{len(items)} {noun}{plural} ({shown}{more})"


def _shape(value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in value
    ):
        raise _Unreadable(f"not a shape: {value!r:.80}")
    return tuple(value)


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    numel: int


def _rebuild_tensor(
    storage: object, offset: object, size: object, stride: object, *_rest: object
) -> Entry:
    if not isinstance(storage, _Storage) or not isinstance(offset, int):
        raise _Unreadable("a tensor without a storage")
    shape, steps = _shape(size), _shape(stride)
    if len(steps) != len(shape):
        raise _Unreadable("a tensor whose stride does not fit its shape")
    if math.prod(shape):
        extent = offset + sum((dim - 1) * step for dim, step in zip(shape, steps, strict=True))
        if extent >= storage.numel:
            raise _Unreadable("a tensor larger than its storage")
    return Entry(shape, storage.dtype)


def _rebuild_parameter(data: object, *_rest: object) -> object:
    return data


class _LayoutUnpickler(pickle.Unpickler):
    """Unpickles a state dict's record into :class:`Entry` values; refuses anything else."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        #: Storage key to ``(dtype, elements)``, as the record names them.
        self.storages: dict[str, tuple[str, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in (
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return _rebuild_parameter
        if module == "torch" and name in TORCH_STORAGES:
            return _StorageType(TORCH_STORAGES[name])
        raise _Unreadable(f"the record names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise _Unreadable(f"an unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        known = self.storages.setdefault(key, (kind.dtype, numel))
        if known != (kind.dtype, numel):
            raise _Unreadable(f"storage {key} is named with two types")
        return _Storage(kind.dtype, numel)


def _read_torch_zip(file: Path) -> object:
    """Unpickle the record of a ``torch.save`` zip file, and check its storages' sizes."""
    try:
        with zipfile.ZipFile(file) as archive:
            records = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(records) != 1 or records[0].count("/") != 1:
                raise _Unreadable("not a torch.save archive")
            prefix = records[0].removesuffix("data.pkl")
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            unpickler = _LayoutUnpickler(archive.read(records[0]))
            record = unpickler.load()
    except (OSError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise _Unreadable(f"a damaged record: {type(exc).__name__}: {exc}") from exc
    for key, (dtype, numel) in unpickler.storages.items():
        size = sizes.get(f"{prefix}data/{key}")
        if size != numel * ITEM_BYTES[dtype]:
            raise _Unreadable(f"storage {key} holds {size} bytes, not {numel} {dtype} values")
    return record


def _read_safetensors_header(file: Path) -> dict[str, Entry]:
    """Read the tensors a safetensors file lists, and check that their bytes are there."""
    try:
        total = file.stat().st_size
        with open(file, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 1 < length <= min(MAX_HEADER_BYTES, total - 8):
                raise _Unreadable(f"a header of {length} bytes in a file of {total}")
            header = json.loads(handle.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(header, dict):
        raise _Unreadable("the header is not a JSON object")
    entries: dict[str, Entry] = {}
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = _shape(info["shape"])
            begin, stop = info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise _Unreadable(f"entry {key!r:.80} is not described: {exc}") from exc
        if not (isinstance(begin, int) and isinstance(stop, int)) or (
            stop - begin != math.prod(shape) * ITEM_BYTES[dtype] or begin < 0
        ):
            raise _Unreadable(f"entry {key!r:.80} has a wrong byte range")
        entries[key] = Entry(shape, dtype)
        end = max(end, stop)
    if end != total - 8 - length:
        raise _Unreadable(
            f"the tensors need {end} bytes after the header, the file has {total - 8 - length}"
        )
    return entries
