"""``LocalStorage``: collections in folders of a local or mounted file system.

Listing is a walk in the code-point order of the relative paths, S3's key order, that follows
links to folders and never loops (:mod:`storage.local_walk`). The listing follows links that
point outside the listed folder; a scan of a collection (``storage.scan``) does not, and
records them.

Writes are atomic: a hidden temporary file in the destination folder, written, flushed and
fsynced, then renamed over the destination (``os.replace``) or, when overwriting is not allowed,
hard-linked to it (which fails if the destination exists) and unlinked. When the destination
exists and the caller named contents it may replace, the existing file is read and hashed, and
the temporary file is renamed over it only if the digest is one of them and the file is still
the same one (device, inode, size and time unchanged); links, folders and devices are never
replaced. The temporary file is removed whatever fails. Its name starts with a ``.`` so that a
scan running at the same time passes over it.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from collections.abc import Collection, Iterator
from typing import Final

from storage.base import (
    Data,
    ObjectInfo,
    Prune,
    SkipListener,
    sha256_of_chunks,
)
from storage.errors import (
    AccessDenied,
    InvalidURI,
    ObjectNotFound,
    OutputExists,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from storage.local_walk import file_info, read_folder, walk
from storage.options import StorageOptions
from storage.uri import LOCAL, URI, parse_uri

__all__ = ["COPY_CHUNK_SIZE", "LocalStorage"]

logger = logging.getLogger(__name__)

#: Bytes copied at a time from a file object into a new file.
COPY_CHUNK_SIZE: Final = 1024 * 1024
#: Bytes of an output's name kept in its temporary name (the rest is "." + 17 characters),
#: so that a name near the 255-byte limit of most file systems still gets a temporary file.
_TEMPORARY_NAME_BYTES: Final = 200

#: errno values of network file systems that may recover; reported as StorageUnavailable.
_TRANSIENT_ERRNOS: Final = frozenset(
    {
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENOTCONN,
        errno.EAGAIN,
    }
)
#: errno values meaning the destination file system is full.
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values of os.link on file systems without hard links.
_NO_LINK_ERRNOS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK})


class LocalStorage:
    """Files and folders on a local or mounted file system.

    The object holds no state, so one instance can be shared by threads and processes.

    Args:
        options: Accepted so that every backend is built the same way
            (:func:`~storage.registry.open_storage`); a file system needs none of them.
    """

    def __init__(self, options: StorageOptions | None = None) -> None:
        del options

    def list(
        self,
        prefix: URI | str,
        *,
        on_skip: SkipListener | None = None,
        prune: Prune | None = None,
    ) -> Iterator[ObjectInfo]:
        """Yield every regular file below a folder, sorted by relative path.

        Args:
            prefix: A folder, or a single file (then listed alone, under its name).
            on_skip: Told ``(relative path, reason)`` of every entry passed over; folders end
                with ``/``. Reasons are ``storage.base.SKIP_*`` constants and the reasons
                returned by ``prune``.
            prune: Given a folder's relative path (without a trailing ``/``), returns a reason
                not to enter it, or None.

        Returns:
            An iterator of :class:`ObjectInfo` with ``checksum_kind`` ``"mtime-size"``.

        Raises:
            ObjectNotFound: If ``prefix`` does not exist (raised at once, not on iteration).
            StorageError: If ``prefix`` cannot be read or is neither a file nor a folder.
        """
        root = _local(prefix)
        try:
            root_stat = os.stat(root.key)
        except OSError as exc:
            raise _error(exc, root.key, "list") from exc
        if stat.S_ISREG(root_stat.st_mode):
            return iter([file_info(root.key, root.name, root_stat)])
        if not stat.S_ISDIR(root_stat.st_mode):
            raise StorageError(f"cannot list {root.key}: it is neither a file nor a folder")
        entries = read_folder(root.key)
        return walk(root.key, root_stat, entries, on_skip, prune)

    def read(self, uri: URI | str) -> bytes:
        """Return the whole content of a file.

        Args:
            uri: The file.

        Returns:
            Its bytes.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be read (a folder, permissions, I/O).
        """
        path = _local(uri).key
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            raise _error(exc, path, "read") from exc

    def sha256(self, uri: URI | str) -> str:
        """Return the SHA-256 of a file's content, read in pieces (never whole in memory).

        Args:
            uri: The file.

        Returns:
            64 lower-case hex digits.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be read (a folder, permissions, I/O).
        """
        return sha256_of_chunks(self.read_chunks(uri))

    def read_chunks(self, uri: URI | str, chunk_size: int = COPY_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the content of a file in pieces, never holding the whole file.

        Args:
            uri: The file.
            chunk_size: Bytes per piece (the last one may be shorter).

        Returns:
            An iterator of the pieces, in order; the file is opened on the first ``next()``.

        Raises:
            ObjectNotFound: If the file does not exist (on iteration).
            StorageError: If it cannot be read (on iteration).
        """
        path = _local(uri).key
        try:
            with open(path, "rb") as file:
                while chunk := file.read(chunk_size):
                    yield chunk
        except OSError as exc:
            raise _error(exc, path, "read") from exc

    def read_head(self, uri: URI | str, n: int) -> bytes:
        """Return the first ``n`` bytes of a file (fewer if it is shorter).

        Args:
            uri: The file.
            n: How many bytes to read; at least 0.

        Returns:
            At most ``n`` bytes.

        Raises:
            ValueError: If ``n`` is negative.
            ObjectNotFound: If the file does not exist.
            StorageError: If it cannot be read.
        """
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        path = _local(uri).key
        try:
            return _read_head(path, n)
        except OSError as exc:
            raise _error(exc, path, "read") from exc

    def write(
        self,
        uri: URI | str,
        data: Data,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
        replaceable: Collection[str] = (),
    ) -> None:
        """Write a file atomically, creating its folders.

        Args:
            uri: The file to write.
            data: The content: bytes, or a binary file object read to its end. An exception
                raised by the file object propagates unchanged, after the temporary file has
                been removed.
            content_type: Ignored: files carry no MIME type.
            overwrite: Whether to replace an existing file unconditionally.
            replaceable: With ``overwrite=False``, SHA-256 digests of contents that may be
                replaced: an existing regular file (not a link) is read, and replaced only
                if its digest is one of them and it is still the same file afterwards.

        Raises:
            OutputExists: If the file exists and may not be replaced; it is left untouched.
            StorageError: If the file cannot be written (permissions, a parent that is a file,
                a full disk); no temporary file is left behind.
            StorageUnavailable: If a network file system failed in a way that may pass.
        """
        path = _local(uri).key
        folder, name = os.path.split(path)
        if not name:
            raise InvalidURI(f"cannot write to a folder path: {path}")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise _error(exc, folder, "create folder", writing=True) from exc
        if not overwrite and not replaceable and os.path.lexists(path):
            raise OutputExists(f"{path} exists and overwriting is not allowed")
        temporary = os.path.join(folder, _temporary_name(name))
        try:
            _write_temporary(temporary, data)
            _commit(temporary, path, overwrite, frozenset(replaceable))
        except BaseException:
            _remove_quietly(temporary)
            raise
        _sync_folder(folder)
        logger.debug("wrote %s", path)

    def exists(self, uri: URI | str) -> bool:
        """Return whether a regular file exists at ``uri`` (following links).

        Args:
            uri: The file.

        Returns:
            True for a regular file; False when nothing (or a folder, or a broken link) is
            there.

        Raises:
            StorageError: If the path cannot be inspected (permissions, I/O).
        """
        path = _local(uri).key
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _error(exc, path, "inspect") from exc

    def stat(self, uri: URI | str) -> ObjectInfo:
        """Return size, checksum and modification time of one file.

        Args:
            uri: The file.

        Returns:
            Its :class:`ObjectInfo`, with ``relative`` set to the file name.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it is not a regular file or cannot be inspected.
        """
        location = _local(uri)
        try:
            info = os.stat(location.key)
        except OSError as exc:
            raise _error(exc, location.key, "inspect") from exc
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{location.key} is not a regular file")
        return file_info(location.key, location.name, info)


def _local(location: URI | str) -> URI:
    uri = parse_uri(location)
    if uri.scheme != LOCAL:
        raise InvalidURI(f"LocalStorage cannot handle {uri}")
    return uri


def _read_head(path: str, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.read(fd, n)
        # A regular file returns everything at once; loop only for short reads (e.g. FUSE).
        while 0 < len(head) < n:
            more = os.read(fd, n - len(head))
            if not more:
                break
            head += more
        return head
    finally:
        os.close(fd)


def _temporary_name(name: str) -> str:
    """A hidden, unique name beside ``name`` that fits the 255-byte limit of file names."""
    # The name's bytes, cut so that "." + name + ".<12 hex>.tmp" stays within 255 bytes;
    # a multi-byte character cut in two comes back as the same bytes (surrogateescape).
    head = os.fsdecode(os.fsencode(name)[:_TEMPORARY_NAME_BYTES])
    return f".{head}.{secrets.token_hex(6)}.tmp"


def _write_temporary(temporary: str, data: Data) -> None:
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise _error(exc, temporary, "create", writing=True) from exc
    try:
        with open(fd, "wb") as file:
            if isinstance(data, bytes | bytearray | memoryview):
                file.write(data)
            else:
                while chunk := data.read(COPY_CHUNK_SIZE):
                    file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise _error(exc, temporary, "write", writing=True) from exc


def _commit(temporary: str, path: str, overwrite: bool, replaceable: frozenset[str]) -> None:
    try:
        if overwrite:
            os.replace(temporary, path)
            return
        if _create(temporary, path):
            return
        _replace_if_allowed(temporary, path, replaceable)
    except OSError as exc:
        raise _error(exc, path, "write", writing=True) from exc


def _create(temporary: str, path: str) -> bool:
    """Give the temporary file its final name if nothing has it; False if something has."""
    try:
        # link() fails if the destination exists: an atomic "create only if absent".
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        # Without hard links the check and the rename cannot be one step.
        if os.path.lexists(path):
            return False
        os.rename(temporary, path)
        return True
    os.unlink(temporary)
    return True


def _replace_if_allowed(temporary: str, path: str, replaceable: frozenset[str]) -> None:
    """Rename over ``path`` only if its content is one the caller may replace."""
    if not replaceable:
        raise OutputExists(f"{path} exists and overwriting is not allowed")
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise OutputExists(f"{path} exists and is not a regular file (a link, folder or device)")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        digest = sha256_of_chunks(iter(lambda: file.read(COPY_CHUNK_SIZE), b""))
    if digest not in replaceable:
        raise OutputExists(f"{path} exists with other content (sha256 {digest})", sha256=digest)
    after = os.lstat(path)
    if _identity(after) != _identity(before):
        raise OutputExists(f"{path} changed while it was being checked", sha256=digest)
    os.replace(temporary, path)


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove temporary file %s: %s", path, exc.strerror or exc)


def _sync_folder(folder: str) -> None:
    """Make the rename durable; some file systems cannot fsync a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        logger.debug("cannot fsync folder %s: %s", folder, exc.strerror or exc)
    finally:
        os.close(fd)


def _error(exc: OSError, path: str, action: str, *, writing: bool = False) -> StorageError:
    """Translate an OSError into the StorageError subclass that says what happened."""
    detail = exc.strerror or str(exc)
    if exc.errno in _TRANSIENT_ERRNOS:
        return StorageUnavailable(f"cannot {action} {path} now: {detail}")
    if not writing and exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ObjectNotFound(f"{path} does not exist")
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(
            f"cannot {action} {path}: no space left on the device; free space there and the "
            "image is tried again"
        )
    if writing and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        # Every output of this process meets the same refusal: its configuration's fault.
        return AccessDenied(
            f"cannot {action} {path}: permission denied ({detail}); let this worker write "
            "to the output folder"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"cannot {action} {path}: permission denied")
    if exc.errno == errno.EISDIR:
        return StorageError(f"cannot {action} {path}: it is a folder")
    return StorageError(f"cannot {action} {path}: {detail}")
