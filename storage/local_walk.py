"""The walk of a local listing: every regular file below a folder, in S3's key order.

An ``os.scandir`` walk with an explicit stack (no recursion limit, no open folder handles kept
between steps). Its order is the code-point order of the relative paths, the same order S3
lists keys in, so both backends yield a collection in the same sequence.

Symbolic links: a link to a file is listed under the link's own path. A link to a folder is
followed, because archives do assemble collections from linked folders; every folder entered is
identified by ``(st_dev, st_ino)``, and a folder that is one of its own ancestors (a link loop,
or a bind mount of a parent) is not entered again and is reported as ``symlink-loop``, while a
folder reached a second time through another link is reported as ``already-listed``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime

from storage.base import (
    CHECKSUM_MTIME_SIZE,
    ObjectInfo,
    Prune,
    SkipListener,
)
from storage.skips import (
    SKIP_ALREADY_LISTED,
    SKIP_BROKEN_LINK,
    SKIP_NOT_A_FILE,
    SKIP_SYMLINK_LOOP,
    SKIP_UNREADABLE,
    SKIP_VANISHED,
)
from storage.uri import LOCAL, URI

__all__ = ["DirEntries", "file_info", "read_folder", "walk"]

logger = logging.getLogger(__name__)

#: A folder's entries: ``(sort key, entry, is folder)``.
DirEntries = list[tuple[str, os.DirEntry[str], bool]]


def file_info(path: str, relative: str, info: os.stat_result) -> ObjectInfo:
    """Return the :class:`ObjectInfo` of a local file from its ``stat``.

    Args:
        path: The file's absolute path.
        relative: Its path below the listed folder (or its name).
        info: Its ``os.stat_result``.

    Returns:
        The listing entry, with the ``mtime-size`` checksum.
    """
    return ObjectInfo(
        uri=URI(LOCAL, "", path),
        relative=relative,
        size=info.st_size,
        checksum=f"{info.st_mtime_ns}+{info.st_size}",
        checksum_kind=CHECKSUM_MTIME_SIZE,
        last_modified=datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC),
    )


def read_folder(path: str) -> DirEntries:
    """Return the entries of a folder as ``(sort key, entry, is folder)``, sorted.

    A folder's sort key ends with ``/`` so that depth-first order equals the code-point order
    of full relative paths (``a.jpg`` < ``a/b.jpg``), as S3 sorts keys.

    Args:
        path: The folder.

    Returns:
        The sorted entries.

    Raises:
        OSError: If the folder cannot be read.
    """
    entries: DirEntries = []
    with os.scandir(path) as scan:
        for entry in scan:
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False  # the stat of the file branch reports why
            entries.append((entry.name + "/" if is_folder else entry.name, entry, is_folder))
    entries.sort(key=lambda item: item[0])
    return entries


def walk(
    root: str,
    root_stat: os.stat_result,
    entries: DirEntries,
    on_skip: SkipListener | None,
    prune: Prune | None,
) -> Iterator[ObjectInfo]:
    """Yield the regular files below a folder, depth first, in code-point order of their paths.

    Args:
        root: The folder's path.
        root_stat: Its ``stat``, which identifies it (a loop leads back to it).
        entries: Its entries, as :func:`read_folder` returns them.
        on_skip: Told ``(relative path, reason)`` of every entry passed over.
        prune: Given a folder's relative path, returns a reason not to enter it, or None.

    Returns:
        An iterator of :class:`ObjectInfo`.
    """
    base = root if root.endswith("/") else root + "/"
    skip = on_skip if on_skip is not None else _ignore
    top = (root_stat.st_dev, root_stat.st_ino)
    seen = {top}
    # One frame per open folder: its remaining entries, its relative path and its ancestors.
    stack = [(iter(entries), "", frozenset({top}))]
    while stack:
        remaining, folder, ancestors = stack[-1]
        item = next(remaining, None)
        if item is None:
            stack.pop()
            continue
        _, entry, is_folder = item
        relative = folder + entry.name
        if not is_folder:
            info = _file_stat(entry, relative, skip)
            if info is not None:
                yield file_info(base + relative, relative, info)
            continue
        reason = prune(relative) if prune is not None else None
        if reason is not None:
            skip(relative + "/", reason)
            continue
        try:
            folder_stat = entry.stat()
            identity = (folder_stat.st_dev, folder_stat.st_ino)
            if identity in ancestors:
                logger.warning("not entering %s%s/: it contains itself", base, relative)
                skip(relative + "/", SKIP_SYMLINK_LOOP)
                continue
            if identity in seen:
                skip(relative + "/", SKIP_ALREADY_LISTED)
                continue
            seen.add(identity)
            children = read_folder(base + relative)
        except OSError as exc:
            logger.warning("cannot list %s%s/: %s", base, relative, exc.strerror or exc)
            skip(relative + "/", _skip_reason(exc, entry))
            continue
        stack.append((iter(children), relative + "/", ancestors | {identity}))


def _file_stat(entry: os.DirEntry[str], relative: str, skip: SkipListener) -> os.stat_result | None:
    try:
        info = entry.stat()
    except OSError as exc:
        skip(relative, _skip_reason(exc, entry))
        return None
    if not stat.S_ISREG(info.st_mode):
        skip(relative, SKIP_NOT_A_FILE)
        return None
    return info


def _skip_reason(exc: OSError, entry: os.DirEntry[str]) -> str:
    if exc.errno == errno.ELOOP:
        return SKIP_SYMLINK_LOOP
    if isinstance(exc, FileNotFoundError):
        return SKIP_BROKEN_LINK if entry.is_symlink() else SKIP_VANISHED
    return SKIP_UNREADABLE


def _ignore(relative: str, reason: str) -> None:
    """Default skip listener: listings without a listener drop skips silently."""
