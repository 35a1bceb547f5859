"""Reading a binary stream in pieces of exact sizes, as S3's multipart uploads need them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["exact_chunks", "read_up_to"]


def read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, or fewer only at the end of the stream (raw streams read short)."""
    data = stream.read(n)
    if len(data) in (0, n):
        return data
    pieces = [data]
    missing = n - len(data)
    while missing > 0:
        more = stream.read(missing)
        if not more:
            break
        pieces.append(more)
        missing -= len(more)
    return b"".join(pieces)


def exact_chunks(first: bytes, stream: BinaryIO, size: int) -> Iterator[bytes]:
    """Yield ``first`` followed by the rest of ``stream`` in pieces of exactly ``size`` bytes.

    Only the last piece may be shorter, as S3 requires of multipart parts.
    """
    view = memoryview(first)
    offset = 0
    while len(first) - offset >= size:
        yield bytes(view[offset : offset + size])
        offset += size
    tail = bytes(view[offset:])
    while True:
        piece = tail + read_up_to(stream, size - len(tail))
        tail = b""
        if not piece:
            return
        yield piece
        if len(piece) < size:
            return
