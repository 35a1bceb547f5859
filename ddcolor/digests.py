"""The SHA-256 of a checkpoint file, remembered by the file's identity instead of re-read.

Hashing a checkpoint reads all of it: 0.15 s for the tiny model's 220 MB, about a second for
the large one. ``panchro submit`` needs the digest before it queues its first image (the
collection records which weights its copies are made with), and the file rarely changes
between submissions. :func:`remembered_sha256` keeps each digest under a key made of the
file's path, device, inode, size, modification time and change time: rewriting, replacing
or touching the file changes the key (the change time moves whenever the file's bytes or
its metadata do, and cannot be set back short of turning the system's clock back), so a
remembered digest is not one of other bytes. Digests are read only from a folder that
belongs to this user and that no one else may write into. A file changed within the last
:data:`SETTLE_S` seconds is hashed and not remembered: it may still be being written.

Only naming a checkpoint uses the memory. A worker that loads the weights hashes the bytes
it loads (``ddcolor.checkpoints.read_checkpoint``), and leaves the digest here for the next
submission. The digests live in a folder of this user's (``panchro-digests-UID`` in the
system's temporary folder, or ``PANCHRO_DIGEST_CACHE``), refused if someone else could
write into it; where it cannot be used, the file is simply hashed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from os import PathLike
from pathlib import Path

__all__ = [
    "DIGEST_CACHE_VARIABLE",
    "UnsafeCacheDir",
    "digest_cache_dir",
    "is_private_dir",
    "private_dir",
    "remember_sha256",
    "remembered_sha256",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of remembered digests.
DIGEST_CACHE_VARIABLE = "PANCHRO_DIGEST_CACHE"
#: Seconds a file must have been left alone before its digest is remembered.
SETTLE_S = 2.0
#: What a remembered digest looks like.
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class UnsafeCacheDir(PermissionError):
    """A cache folder belongs to someone else, or others can write into it."""


def digest_cache_dir() -> Path:
    """This user's folder of remembered digests.

    Returns:
        ``PANCHRO_DIGEST_CACHE`` if set, else ``panchro-digests-UID`` in the system's
        temporary folder.
    """
    named = os.environ.get(DIGEST_CACHE_VARIABLE)
    if named:
        return Path(named)
    return Path(tempfile.gettempdir()) / f"panchro-digests-{os.getuid()}"


def private_dir(folder: Path) -> Path:
    """Create a cache folder only this user can write, or check that an existing one is.

    Args:
        folder: The folder.

    Returns:
        The folder.

    Raises:
        UnsafeCacheDir: If it belongs to someone else, or others can write into it.
        OSError: If it cannot be created.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not is_private_dir(folder):
        raise UnsafeCacheDir(
            f"cache folder {folder} belongs to someone else or others can write it; "
            "remove it or name another"
        )
    return folder


def is_private_dir(folder: Path) -> bool:
    """Whether a folder belongs to this user and no one else may write into it.

    Args:
        folder: The folder.

    Returns:
        False also when it cannot be examined.
    """
    try:
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def remembered_sha256(path: str | PathLike[str], hash_file: Callable[[Path], str]) -> str:
    """Return a file's SHA-256: remembered if this very file was hashed before, else hashed.

    Args:
        path: The file.
        hash_file: Hashes it (and raises the caller's error when it cannot be read).

    Returns:
        64 lower-case hex digits.
    """
    file = Path(path)
    entry = _entry(file)
    if entry is not None and is_private_dir(entry.parent):
        try:
            known = entry.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            known = ""
        if _HEX_DIGEST.fullmatch(known):
            logger.debug("%s: SHA-256 remembered from %s", file, entry)
            return known
    digest = hash_file(file)
    remember_sha256(file, digest)
    return digest


def remember_sha256(path: str | PathLike[str], digest: str) -> None:
    """Remember the digest of a file just hashed, unless it changed too recently.

    Never fails: a digest that cannot be kept is hashed again next time.

    Args:
        path: The file.
        digest: Its SHA-256, as hex.
    """
    file = Path(path)
    entry = _entry(file, settled=True)
    if entry is None or not _HEX_DIGEST.fullmatch(digest):
        return
    try:
        private_dir(entry.parent)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".part-")
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(digest + "\n")
        os.replace(temporary, entry)
    except OSError as exc:
        logger.debug("%s: SHA-256 not remembered: %s", file, exc)


def _entry(file: Path, *, settled: bool = False) -> Path | None:
    """The file that holds (or would hold) the digest of ``file`` as it is now.

    Args:
        file: The hashed file.
        settled: Only if it has not changed for :data:`SETTLE_S` seconds.

    Returns:
        The entry's path, or None when the file cannot be examined or is too fresh.
    """
    try:
        real = file.resolve(strict=True)
        info = real.stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if settled and time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < SETTLE_S * 1e9:
        return None
    identity = "\0".join(
        str(part)
        for part in (
            real,
            info.st_dev,
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
            info.st_ctime_ns,
        )
    )
    return digest_cache_dir() / hashlib.sha256(identity.encode()).hexdigest()
