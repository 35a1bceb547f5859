"""A checkpoint's SHA-256 is remembered by the file's identity, and only for that file."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ddcolor import digests
from ddcolor.digests import DIGEST_CACHE_VARIABLE, remembered_sha256


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "digests"
    monkeypatch.setenv(DIGEST_CACHE_VARIABLE, str(folder))
    return folder


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Files written by a test are seconds old at most: count them as left alone.
    monkeypatch.setattr(digests, "SETTLE_S", 0.0)


def counting() -> tuple[list[Path], Callable[[Path], str]]:
    calls: list[Path] = []

    def hash_file(path: Path) -> str:
        calls.append(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return calls, hash_file


def test_a_file_left_alone_is_hashed_once(tmp_path: Path, cache: Path, settled: None) -> None:
    file = tmp_path / "weights.pth"
    file.write_bytes(b"a" * 1000)
    calls, hash_file = counting()

    first = remembered_sha256(file, hash_file)
    again = remembered_sha256(file, hash_file)

    assert first == again == hashlib.sha256(b"a" * 1000).hexdigest()
    assert calls == [file]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_new_bytes_of_the_same_size_are_hashed_again(
    tmp_path: Path, cache: Path, settled: None
) -> None:
    file = tmp_path / "weights.pth"
    file.write_bytes(b"a" * 1000)
    calls, hash_file = counting()
    remembered_sha256(file, hash_file)
    info = file.stat()

    file.write_bytes(b"b" * 1000)
    # Even with the modification time put back: the change time moved.
    os.utime(file, ns=(info.st_atime_ns, info.st_mtime_ns))

    assert remembered_sha256(file, hash_file) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(calls) == 2


def test_another_file_with_the_same_bytes_is_hashed_itself(
    tmp_path: Path, cache: Path, settled: None
) -> None:
    one, two = tmp_path / "one.pth", tmp_path / "two.pth"
    one.write_bytes(b"same")
    two.write_bytes(b"same")
    calls, hash_file = counting()

    remembered_sha256(one, hash_file)
    remembered_sha256(two, hash_file)

    assert calls == [one, two]


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path: Path, cache: Path) -> None:
    # It may still be being written: the next look hashes it again.
    file = tmp_path / "weights.pth"
    file.write_bytes(b"partial")
    calls, hash_file = counting()

    remembered_sha256(file, hash_file)
    remembered_sha256(file, hash_file)

    assert len(calls) == 2
    assert not cache.exists() or not any(cache.iterdir())


def test_a_damaged_entry_is_hashed_again_and_replaced(
    tmp_path: Path, cache: Path, settled: None
) -> None:
    file = tmp_path / "weights.pth"
    file.write_bytes(b"weights")
    calls, hash_file = counting()
    remembered_sha256(file, hash_file)
    (entry,) = cache.iterdir()
    entry.write_text("not a digest")

    assert remembered_sha256(file, hash_file) == hashlib.sha256(b"weights").hexdigest()
    assert len(calls) == 2
    assert entry.read_text().strip() == hashlib.sha256(b"weights").hexdigest()


def test_a_folder_others_can_write_is_not_used(tmp_path: Path, cache: Path, settled: None) -> None:
    # Someone else could plant a digest there: the file is hashed every time instead.
    file = tmp_path / "weights.pth"
    file.write_bytes(b"weights")
    calls, hash_file = counting()
    remembered_sha256(file, hash_file)
    (entry,) = cache.iterdir()
    entry.write_text("0" * 64)  # a planted digest
    cache.chmod(0o777)

    for _ in range(2):
        assert remembered_sha256(file, hash_file) == hashlib.sha256(b"weights").hexdigest()

    assert len(calls) == 3
    assert entry.read_text() == "0" * 64


def test_without_a_usable_folder_the_file_is_still_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(DIGEST_CACHE_VARIABLE, str(blocker / "digests"))
    file = tmp_path / "weights.pth"
    file.write_bytes(b"weights")
    calls, hash_file = counting()

    assert remembered_sha256(file, hash_file) == hashlib.sha256(b"weights").hexdigest()
    assert len(calls) == 1
