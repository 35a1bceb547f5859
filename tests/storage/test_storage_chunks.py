"""``storage.read_chunks``: objects read in pieces of a bounded size, local and on S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from storage import LocalStorage, ObjectNotFound, StorageOptions, read_chunks
from storage.s3 import S3Storage

#: Bytes per piece in these tests.
PIECE = 1000
#: Two and a half pieces.
DATA = bytes(range(256)) * 10


def test_local_file_comes_in_pieces_of_the_size_asked_and_a_missing_one_is_not_found(
    tmp_path: Path,
) -> None:
    (tmp_path / "scan.tif").write_bytes(DATA)
    storage = LocalStorage()

    pieces = list(read_chunks(storage, str(tmp_path / "scan.tif"), PIECE))

    assert [len(piece) for piece in pieces] == [PIECE, PIECE, len(DATA) - 2 * PIECE]
    assert b"".join(pieces) == DATA
    with pytest.raises(ObjectNotFound):
        list(read_chunks(storage, str(tmp_path / "gone.tif"), PIECE))


def test_a_backend_without_streaming_reads_is_read_whole(tmp_path: Path) -> None:
    class Plain:
        def read(self, uri: str) -> bytes:
            return DATA

    assert list(read_chunks(Plain(), "x", PIECE)) == [DATA]  # type: ignore[arg-type]


@pytest.mark.s3
def test_s3_object_comes_in_pieces_of_one_streamed_get(
    s3_endpoint_url: str, s3_bucket: str
) -> None:
    storage = S3Storage(StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path"))
    uri = f"s3://{s3_bucket}/{uuid.uuid4().hex}.tif"
    storage.write(uri, DATA)

    pieces = list(read_chunks(storage, uri, PIECE))

    assert [len(piece) for piece in pieces] == [PIECE, PIECE, len(DATA) - 2 * PIECE]
    assert b"".join(pieces) == DATA
    with pytest.raises(ObjectNotFound):
        list(read_chunks(storage, f"s3://{s3_bucket}/missing.tif", PIECE))
