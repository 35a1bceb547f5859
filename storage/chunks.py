"""Reading an object in pieces, whatever its backend: hashing and copying large files.

:class:`~storage.local.LocalStorage` and :class:`~storage.s3.S3Storage` stream (a file read
piece by piece, one streamed GET); a backend registered from elsewhere that has no
``read_chunks`` method is read whole, as one piece, so that it still works.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from storage.base import Storage
from storage.uri import URI

__all__ = ["CHUNK_SIZE", "read_chunks"]

#: Bytes per piece when the caller does not say (1 MiB).
CHUNK_SIZE: Final = 1024 * 1024


def read_chunks(storage: Storage, uri: URI | str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the content of an object in pieces of at most ``chunk_size`` bytes.

    Args:
        storage: The backend that holds the object.
        uri: The object.
        chunk_size: Bytes per piece, at least 1.

    Returns:
        An iterator of the pieces, in order; nothing is read before the first ``next()``.

    Raises:
        ValueError: If ``chunk_size`` is below 1.
        ObjectNotFound: If the object does not exist (on iteration).
        StorageError: If it cannot be read (on iteration).
    """
    if chunk_size < 1:
        raise ValueError(f"cannot read pieces of {chunk_size} bytes")
    reader = getattr(storage, "read_chunks", None)
    if reader is not None:
        chunks: Iterator[bytes] = reader(uri, chunk_size)
        return chunks
    return _whole(storage, uri)


def _whole(storage: Storage, uri: URI | str) -> Iterator[bytes]:
    data = storage.read(uri)
    if data:
        yield data
