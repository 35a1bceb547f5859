"""Reading a checkpoint's layout from the file's headers, without torch.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence.

``panchro submit`` records which checkpoint a collection is meant for after checking that
the file really is that model. Only the file's layout is needed for that (see
:mod:`ddcolor.layout`), and this module reads it straight from the file, without importing
torch (about 1.5 s and 400 MB before the first byte is read):

- PyTorch zip files (``torch.save`` since 1.6; the released ``.pth``, ``.pt`` and
  ``pytorch_model.bin``): the pickled record in ``data.pkl`` is read by an unpickler that
  knows only the handful of names a state dict uses (``OrderedDict``, tensor rebuilds,
  storage types) and refuses everything else, so nothing in the file is ever run. Tensor
  data is not read; each storage is checked to be present with its full size.
- safetensors: the JSON header, with every tensor's byte range checked against the file.

Anything else (the legacy pickle format, unknown names, damaged archives) is left to torch
(:func:`ddcolor.checkpoints.read_checkpoint`), which says precisely what is wrong with it.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddcolor.errors import CheckpointError
from ddcolor.layout import Entry

logger = logging.getLogger(__name__)

#: File suffixes read with ``torch.load``.
TORCH_SUFFIXES = frozenset({".pth", ".pt", ".bin", ".ckpt"})
#: File suffix read with ``safetensors``.
SAFETENSORS_SUFFIX = ".safetensors"
#: Largest safetensors header read, in bytes (the safetensors library's own limit).
MAX_HEADER_BYTES = 100_000_000
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


def read_record(file: Path) -> object | None:
    """Read what a checkpoint holds, with an :class:`~ddcolor.layout.Entry` for each tensor.

    Args:
        file: The checkpoint.

    Returns:
        The file's record (for a state dict: names to entries, possibly under a BasicSR
        key); None when this reader cannot tell, and torch must read the file.

    Raises:
        CheckpointError: If the file cannot be read at all.
    """
    try:
        if file_format(file) == "safetensors":
            return _read_safetensors_header(file)
        return _read_torch_zip(file)
    except _Unreadable as exc:
        logger.debug("%s: read with torch instead: %s", file, exc)
        return None


class _Unreadable(Exception):
    """The quick reader cannot tell what the file holds; torch must read it."""


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
