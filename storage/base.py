"""The ``Storage`` protocol that every backend implements, and what its methods share.

A backend lists, reads and writes objects named by :class:`~storage.uri.URI` values. Two exist:
:class:`~storage.local.LocalStorage` (folders) and :class:`~storage.s3.S3Storage` (S3 and
S3-compatible services). :func:`~storage.registry.open_storage` picks one by the scheme of a
location; :class:`~storage.options.StorageOptions` holds the plain values they are built from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Final, Protocol, TypeAlias, runtime_checkable

from storage.uri import URI

__all__ = [
    "CHECKSUM_ETAG",
    "CHECKSUM_MTIME_SIZE",
    "Data",
    "ObjectInfo",
    "Prune",
    "SkipListener",
    "Storage",
    "sha256_of_chunks",
]

#: Checksum kind of S3 objects: the ETag, without quotes.
CHECKSUM_ETAG: Final = "etag"
#: Checksum kind of local files: ``"<st_mtime_ns>+<st_size>"``.
CHECKSUM_MTIME_SIZE: Final = "mtime-size"

#: What ``write()`` accepts: bytes, or a binary file object that is read to its end.
Data: TypeAlias = bytes | bytearray | memoryview | BinaryIO
#: Called with the relative path of an entry a listing passed over and the reason.
SkipListener: TypeAlias = Callable[[str, str], None]
#: Called with the relative path of a folder; a reason (text) tells a walk not to enter it.
Prune: TypeAlias = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object or file.

    Attributes:
        uri: Where the object is.
        relative: Its ``/``-separated key below the listed prefix (for a listing of a single
            object, or ``stat()``, its name).
        size: Size in bytes.
        checksum: Text that changes when the content changes: the S3 ETag, or for a local file
            ``"<st_mtime_ns>+<st_size>"``.
        checksum_kind: ``"etag"`` or ``"mtime-size"``.
        last_modified: Time of the last change, timezone-aware UTC.
    """

    uri: URI
    relative: str
    size: int
    checksum: str
    checksum_kind: str
    last_modified: datetime


@runtime_checkable
class Storage(Protocol):
    """Read, write and list objects in one kind of store.

    Every method accepts a :class:`URI` or text that :func:`~storage.uri.parse_uri` accepts,
    and raises only :class:`~storage.errors.StorageError` subclasses for failures of the store:
    :class:`~storage.errors.ObjectNotFound`, :class:`~storage.errors.OutputExists`,
    :class:`~storage.errors.StorageUnavailable` (worth retrying) or the base class.
    """

    def list(
        self,
        prefix: URI | str,
        *,
        on_skip: SkipListener | None = None,
        prune: Prune | None = None,
    ) -> Iterator[ObjectInfo]:
        """Yield every object below ``prefix`` (recursively), sorted by relative key.

        Args:
            prefix: A folder or S3 prefix; a single file or object is listed alone.
            on_skip: Told ``(relative path, reason)`` of entries passed over (symlink loops,
                unreadable folders, broken links, special files, folder markers); reasons are
                the ``SKIP_*`` constants of :mod:`storage.skips` or what ``prune`` returned.
            prune: A hint: backends that walk folders do not enter one for which it returns a
                reason, and report it once through ``on_skip``. Others may ignore it, so
                callers must still filter what is yielded.

        Returns:
            An iterator of :class:`ObjectInfo`, in code-point order of ``relative``.

        Raises:
            ObjectNotFound: If a local ``prefix`` does not exist.
            StorageError: If the listing fails, e.g. the bucket does not exist.
            StorageUnavailable: If the store cannot be reached now.
        """
        ...

    def read(self, uri: URI | str) -> bytes:
        """Return the whole content of an object.

        Args:
            uri: The object.

        Returns:
            Its bytes.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be read.
        """
        ...

    def sha256(self, uri: URI | str) -> str:
        """Return the SHA-256 of an object's content, read as a stream.

        Args:
            uri: The object.

        Returns:
            64 lower-case hex digits.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be read.
        """
        ...

    def read_head(self, uri: URI | str, n: int) -> bytes:
        """Return the first ``n`` bytes of an object (fewer if it is shorter).

        Args:
            uri: The object.
            n: How many bytes to read.

        Returns:
            At most ``n`` bytes.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be read.
        """
        ...

    def write(
        self,
        uri: URI | str,
        data: Data,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
        replaceable: Collection[str] = (),
    ) -> None:
        """Write an object atomically: readers see the old content or all the new content.

        With ``overwrite=False`` the write never replaces what it was not told it may:
        a new object is created only where none exists, in one step where the store
        allows it (a hard link locally, ``If-None-Match: *`` on S3), and an existing
        object is replaced only when the SHA-256 of its content is one of
        ``replaceable`` and it did not change between that check and the replacement
        (same file locally, ``If-Match`` on its ETag on S3).

        Args:
            uri: The object to write.
            data: The content, as bytes or a binary file object read to its end.
            content_type: A MIME type to record where the store keeps one.
            overwrite: Whether to replace an existing object unconditionally.
            replaceable: With ``overwrite=False``, hex SHA-256 digests of contents that
                may be replaced (a caller's own earlier writes).

        Raises:
            OutputExists: If the object exists and may not be replaced; it is untouched.
            StorageError: If the write fails; nothing partial is left behind.
        """
        ...

    def exists(self, uri: URI | str) -> bool:
        """Return whether an object (a file, locally) exists at ``uri``.

        Args:
            uri: The object.

        Returns:
            True if it exists.

        Raises:
            StorageError: If the store cannot tell.
        """
        ...

    def stat(self, uri: URI | str) -> ObjectInfo:
        """Return size, checksum and time of one object.

        Args:
            uri: The object.

        Returns:
            Its :class:`ObjectInfo`, whose ``relative`` is the object's name.

        Raises:
            ObjectNotFound: If it does not exist.
            StorageError: If it cannot be inspected.
        """
        ...


def sha256_of_chunks(chunks: Iterable[bytes]) -> str:
    """Return the hex SHA-256 of content read in pieces (an existing object being checked).

    Args:
        chunks: The content, in order.

    Returns:
        64 lower-case hex digits.
    """
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
