"""Tests of storage.local.LocalStorage on real files in a temporary folder."""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.base import (
    Storage,
)
from storage.errors import (
    AccessDenied,
    ObjectNotFound,
    OutputExists,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from storage.local import LocalStorage, _error
from storage.registry import open_storage
from storage.skips import SKIP_ALREADY_LISTED, SKIP_BROKEN_LINK, SKIP_NOT_A_FILE, SKIP_SYMLINK_LOOP


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _listed(root: Path, skips: list[tuple[str, str]] | None = None) -> list[str]:
    on_skip = None if skips is None else lambda rel, why: skips.append((rel, why))
    return [info.relative for info in LocalStorage().list(str(root), on_skip=on_skip)]


def test_local_storage_satisfies_the_storage_protocol() -> None:
    assert isinstance(LocalStorage(), Storage)


def test_open_storage_returns_local_storage_for_paths(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)


def test_list_yields_files_in_code_point_order_of_relative_paths(tmp_path: Path) -> None:
    for relative in ["b.jpg", "a/b.jpg", "a.jpg", "A.jpg", "a b/c.jpg", "a/z/y.jpg", "a-c.jpg"]:
        _touch(tmp_path / relative)

    listed = _listed(tmp_path)

    assert listed == sorted(listed)
    assert set(listed) == {
        "b.jpg",
        "a/b.jpg",
        "a.jpg",
        "A.jpg",
        "a b/c.jpg",
        "a/z/y.jpg",
        "a-c.jpg",
    }


def test_list_reports_size_mtime_checksum_and_utc_time(tmp_path: Path) -> None:
    path = _touch(tmp_path / "album" / "p001.tif", b"12345")
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))

    [info] = LocalStorage().list(str(tmp_path))

    assert info.relative == "album/p001.tif"
    assert info.uri.key == str(path)
    assert info.size == 5
    assert info.checksum == "1600000000123456789+5"
    assert info.checksum_kind == "mtime-size"
    assert info.last_modified == datetime.fromtimestamp(1_600_000_000.123456789, UTC)


def test_list_of_a_single_file_yields_it_under_its_name(tmp_path: Path) -> None:
    path = _touch(tmp_path / "one.jpg")

    [info] = LocalStorage().list(str(path))

    assert info.relative == "one.jpg"
    assert info.uri.key == str(path)


def test_list_of_a_missing_folder_raises_object_not_found_at_once(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStorage().list(str(tmp_path / "missing"))


def test_list_follows_symlinked_files_and_folders(tmp_path: Path) -> None:
    _touch(tmp_path / "elsewhere" / "inside.jpg")
    _touch(tmp_path / "target.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked-folder").symlink_to(tmp_path / "elsewhere")
    (root / "linked.jpg").symlink_to(tmp_path / "target.jpg")

    assert _listed(root) == ["linked-folder/inside.jpg", "linked.jpg"]


def test_list_does_not_enter_a_symlink_loop_and_reports_it(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "photo.jpg")
    (tmp_path / "a" / "back-to-root").symlink_to(tmp_path)
    (tmp_path / "a" / "itself").symlink_to(tmp_path / "a")
    skips: list[tuple[str, str]] = []

    listed = _listed(tmp_path, skips)

    assert listed == ["a/photo.jpg"]
    assert sorted(skips) == [
        ("a/back-to-root/", SKIP_SYMLINK_LOOP),
        ("a/itself/", SKIP_SYMLINK_LOOP),
    ]


def test_list_reports_a_link_that_points_at_itself(tmp_path: Path) -> None:
    (tmp_path / "self").symlink_to(tmp_path / "self")
    skips: list[tuple[str, str]] = []

    assert _listed(tmp_path, skips) == []
    assert skips == [("self", SKIP_SYMLINK_LOOP)]


def test_list_lists_a_folder_reached_through_two_links_once(tmp_path: Path) -> None:
    _touch(tmp_path / "shared" / "p.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "first").symlink_to(tmp_path / "shared")
    (root / "second").symlink_to(tmp_path / "shared")
    skips: list[tuple[str, str]] = []

    assert _listed(root, skips) == ["first/p.jpg"]
    assert skips == [("second/", SKIP_ALREADY_LISTED)]


def test_list_reports_broken_links_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    _touch(tmp_path / "real.jpg")
    skips: list[tuple[str, str]] = []

    assert _listed(tmp_path, skips) == ["real.jpg"]
    assert sorted(skips) == [("dangling.jpg", SKIP_BROKEN_LINK), ("pipe.jpg", SKIP_NOT_A_FILE)]


def test_list_does_not_enter_pruned_folders_and_reports_them_once(tmp_path: Path) -> None:
    for index in range(3):
        _touch(tmp_path / ".git" / f"object{index}")
    _touch(tmp_path / "keep" / "p.jpg")
    skips: list[tuple[str, str]] = []

    listed = [
        info.relative
        for info in LocalStorage().list(
            str(tmp_path),
            on_skip=lambda rel, why: skips.append((rel, why)),
            prune=lambda rel: "hidden" if rel.startswith(".") else None,
        )
    ]

    assert listed == ["keep/p.jpg"]
    assert skips == [(".git/", "hidden")]


def test_read_returns_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    path = _touch(tmp_path / "p.tif", data)

    assert LocalStorage().read(str(path)) == data


def test_read_of_a_missing_file_raises_object_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="missing.jpg"):
        LocalStorage().read(str(tmp_path / "missing.jpg"))


def test_read_of_a_folder_raises_storage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="folder") as caught:
        LocalStorage().read(str(tmp_path))

    assert not isinstance(caught.value, ObjectNotFound)
    assert isinstance(caught.value.__cause__, OSError)


def test_read_head_returns_the_first_bytes_only(tmp_path: Path) -> None:
    path = _touch(tmp_path / "p.tif", bytes(range(200)))
    storage = LocalStorage()

    assert storage.read_head(str(path), 32) == bytes(range(32))
    assert storage.read_head(str(path), 1000) == bytes(range(200))
    assert storage.read_head(str(path), 0) == b""


def test_read_head_of_a_missing_file_raises_object_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStorage().read_head(str(tmp_path / "missing.jpg"), 32)


def test_write_creates_folders_and_the_file_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out" / "1920s" / "p.jpg"
    previous = os.umask(0o022)
    try:
        LocalStorage().write(str(target), b"colour", content_type="image/jpeg")
    finally:
        os.umask(previous)

    assert target.read_bytes() == b"colour"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["p.jpg"]


@pytest.mark.parametrize("name", ["l" * 251 + ".png", "é" * 125 + ".png"])
def test_write_of_a_name_near_the_length_limit_works_and_leaves_no_temporary_file(
    tmp_path: Path, name: str
) -> None:
    LocalStorage().write(str(tmp_path / name), b"data")

    assert [path.name for path in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"data"


def test_write_replaces_an_existing_file_by_default(tmp_path: Path) -> None:
    target = _touch(tmp_path / "p.jpg", b"old")

    LocalStorage().write(str(target), b"new")

    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["p.jpg"]


def test_write_with_overwrite_false_refuses_an_existing_file(tmp_path: Path) -> None:
    target = _touch(tmp_path / "p.jpg", b"old")

    with pytest.raises(OutputExists):
        LocalStorage().write(str(target), b"new", overwrite=False)

    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["p.jpg"]


def test_write_with_overwrite_false_creates_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "p.jpg"

    LocalStorage().write(str(target), b"new", overwrite=False)

    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["p.jpg"]


def test_write_copies_a_file_object_to_its_end(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    LocalStorage().write(str(tmp_path / "big.tif"), io.BytesIO(data))

    assert (tmp_path / "big.tif").read_bytes() == data


class _FailingReader(io.RawIOBase):
    """A data source that breaks after its first chunk, like a dropped upstream connection."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("source broke midway")
        return b"partial data " * 1000


def test_write_that_fails_midway_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = _touch(tmp_path / "p.jpg", b"old")
    source = _FailingReader()

    with pytest.raises(RuntimeError, match="midway"):
        LocalStorage().write(str(target), source)  # type: ignore[arg-type]

    assert source.calls == 2
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["p.jpg"]


def test_write_below_a_file_raises_storage_error_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = _touch(tmp_path / "not-a-folder")

    with pytest.raises(StorageError, match="not-a-folder") as caught:
        LocalStorage().write(str(blocker / "p.jpg"), b"data")

    assert not isinstance(caught.value, ObjectNotFound)
    assert isinstance(caught.value.__cause__, OSError)
    assert os.listdir(tmp_path) == ["not-a-folder"]


def test_write_to_an_existing_folder_path_fails_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "taken").mkdir()

    with pytest.raises(StorageError, match="taken"):
        LocalStorage().write(str(tmp_path / "taken"), b"data")

    assert os.listdir(tmp_path) == ["taken"]
    assert os.listdir(tmp_path / "taken") == []


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        pytest.skip("permissions do not apply to root")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_write_into_an_unwritable_folder_raises_permission_error(read_only_folder: Path) -> None:
    with pytest.raises(AccessDenied, match="permission denied"):
        LocalStorage().write(str(read_only_folder / "p.jpg"), b"data")

    assert os.listdir(read_only_folder) == []


def test_exists_is_true_only_for_regular_files(tmp_path: Path) -> None:
    _touch(tmp_path / "p.jpg")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    storage = LocalStorage()

    assert storage.exists(str(tmp_path / "p.jpg"))
    assert not storage.exists(str(tmp_path / "missing.jpg"))
    assert not storage.exists(str(tmp_path))
    assert not storage.exists(str(tmp_path / "dangling"))
    assert not storage.exists(str(tmp_path / "p.jpg" / "below-a-file"))


def test_stat_describes_one_file(tmp_path: Path) -> None:
    path = _touch(tmp_path / "a" / "p.jpg", b"abc")

    info = LocalStorage().stat(str(path))

    assert (info.relative, info.size, info.checksum_kind) == ("p.jpg", 3, "mtime-size")
    assert info.checksum == f"{path.stat().st_mtime_ns}+3"


def test_stat_of_a_missing_file_raises_object_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStorage().stat(str(tmp_path / "missing.jpg"))


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_a_refused_write_is_access_denied_and_a_refused_read_is_not(code: int) -> None:
    # Run as root the folder permissions above are not enforced: check the translation.
    from storage.local import _error

    refused = OSError(code, os.strerror(code))

    assert isinstance(_error(refused, "/out/p.jpg", "write", writing=True), AccessDenied)
    assert not isinstance(_error(refused, "/in/p.jpg", "read"), AccessDenied)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_a_failure_that_may_pass_once_space_is_freed(code: int) -> None:
    # The end-to-end case (a real full tmpfs) is tests/faults; this is the translation.
    error = _error(OSError(code, os.strerror(code)), "/out/a.png", "write", writing=True)

    assert isinstance(error, StorageFull)
    assert isinstance(error, StorageUnavailable)  # so workers retry it (RETRYABLE)
    assert "no space left" in str(error)
