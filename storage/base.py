"""The ``Storage`` protocol that every backend implements, ``S3Options`` and ``open_storage()``.

A backend lists, reads and writes objects named by :class:`~storage.uri.URI` values. Two exist:
:class:`~storage.local.LocalStorage` (folders) and :class:`~storage.s3.S3Storage` (S3 and
S3-compatible services). :func:`open_storage` picks one by the scheme of a location and imports
it lazily, so that a local-only run never imports boto3. :class:`S3Options` holds the plain
values an S3 client is built from, so that every worker process can build its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Final, Protocol, TypeAlias, runtime_checkable

from storage.uri import URI, parse_uri

__all__ = [
    "CHECKSUM_ETAG",
    "CHECKSUM_MTIME_SIZE",
    "SKIP_ALREADY_LISTED",
    "SKIP_BROKEN_LINK",
    "SKIP_FOLDER_MARKER",
    "SKIP_NOT_A_FILE",
    "SKIP_SYMLINK_LOOP",
    "SKIP_UNREADABLE",
    "SKIP_VANISHED",
    "Data",
    "ObjectInfo",
    "Prune",
    "S3Options",
    "SkipListener",
    "Storage",
    "open_storage",
    "sha256_of_chunks",
]

#: Checksum kind of S3 objects: the ETag, without quotes.
CHECKSUM_ETAG: Final = "etag"
#: Checksum kind of local files: ``"<st_mtime_ns>+<st_size>"``.
CHECKSUM_MTIME_SIZE: Final = "mtime-size"

#: Skip reason: a folder that contains itself through a link or bind mount.
SKIP_SYMLINK_LOOP: Final = "symlink-loop"
#: Skip reason: a folder already listed, reached again through another link.
SKIP_ALREADY_LISTED: Final = "already-listed"
#: Skip reason: a symbolic link whose target does not exist.
SKIP_BROKEN_LINK: Final = "broken-link"
#: Skip reason: a folder or file that could not be opened or inspected (permissions, I/O).
SKIP_UNREADABLE: Final = "unreadable"
#: Skip reason: a FIFO, socket or device (reading one could block forever).
SKIP_NOT_A_FILE: Final = "not-a-file"
#: Skip reason: an entry removed between listing it and inspecting it.
SKIP_VANISHED: Final = "vanished"
#: Skip reason: a zero-byte ``folder/`` key that S3 consoles create to show empty folders.
SKIP_FOLDER_MARKER: Final = "folder-marker"

#: Addressing styles of S3 requests: bucket in the path, in the host name, or chosen by botocore.
S3_ADDRESSING_STYLES: Final = ("auto", "path", "virtual")
#: Tries per S3 request, the first included.
S3_MAX_ATTEMPTS: Final = 5
#: Seconds to wait for an S3 connection (TCP and TLS).
S3_CONNECT_TIMEOUT: Final = 10.0
#: Seconds to wait for S3 data on an open connection.
S3_READ_TIMEOUT: Final = 60.0
#: Bytes from which an S3 write is a multipart upload instead of one PUT.
S3_MULTIPART_THRESHOLD: Final = 64 * 1024 * 1024
#: Bytes per part of a multipart upload (S3 allows 10,000 parts: objects up to 160 GiB).
S3_MULTIPART_CHUNKSIZE: Final = 16 * 1024 * 1024
#: Bytes: S3's smallest allowed part of a multipart upload, except the last one.
S3_MIN_PART_SIZE: Final = 5 * 1024 * 1024

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


@dataclass(frozen=True, slots=True)
class S3Options:
    """The plain values an S3 client is built from.

    Attributes:
        endpoint_url: Endpoint of an S3-compatible service (MinIO, Ceph, moto); None for AWS.
        region: Region name; None uses the standard AWS configuration chain.
        addressing_style: ``"path"``, ``"virtual"`` or ``"auto"``.
        max_attempts: Tries per request, the first included.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for data on an open connection.
        multipart_threshold: Bytes from which a write is a multipart upload.
        multipart_chunksize: Bytes per part; at least S3's 5 MiB minimum.

    Raises:
        ValueError: If a value is out of range.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    max_attempts: int = S3_MAX_ATTEMPTS
    connect_timeout: float = S3_CONNECT_TIMEOUT
    read_timeout: float = S3_READ_TIMEOUT
    multipart_threshold: int = S3_MULTIPART_THRESHOLD
    multipart_chunksize: int = S3_MULTIPART_CHUNKSIZE

    def __post_init__(self) -> None:
        if self.addressing_style not in S3_ADDRESSING_STYLES:
            raise ValueError(
                f"addressing_style must be one of {', '.join(S3_ADDRESSING_STYLES)}, "
                f"not {self.addressing_style!r}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("S3 timeouts must be positive")
        if self.multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive: {self.multipart_threshold}")
        if self.multipart_chunksize < S3_MIN_PART_SIZE:
            raise ValueError(
                f"multipart_chunksize must be at least {S3_MIN_PART_SIZE} bytes "
                f"(S3's smallest part), not {self.multipart_chunksize}"
            )


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
                this module's ``SKIP_*`` constants or what ``prune`` returned.
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


def open_storage(
    uri: URI | str | os.PathLike[str],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    addressing_style: str | None = None,
    max_attempts: int = S3_MAX_ATTEMPTS,
    connect_timeout: float = S3_CONNECT_TIMEOUT,
    read_timeout: float = S3_READ_TIMEOUT,
    multipart_threshold: int = S3_MULTIPART_THRESHOLD,
    multipart_chunksize: int = S3_MULTIPART_CHUNKSIZE,
) -> Storage:
    """Return the backend for the scheme of ``uri``; the S3 options are ignored for paths.

    Args:
        uri: Any location of the store, e.g. the collection's source or output.
        endpoint_url: Endpoint of an S3-compatible service; None for AWS.
        region: S3 region; None uses the standard AWS configuration chain.
        addressing_style: ``"path"``, ``"virtual"`` or ``"auto"`` (None: ``"auto"``).
        max_attempts: Tries per S3 request, the first included.
        connect_timeout: Seconds to wait for an S3 connection.
        read_timeout: Seconds to wait for S3 data on an open connection.
        multipart_threshold: Bytes from which S3 writes are multipart uploads.
        multipart_chunksize: Bytes per part of a multipart upload.

    Returns:
        A :class:`Storage`.

    Raises:
        InvalidURI: If ``uri`` is not a location.
        ValueError: If an S3 option is out of range.
    """
    location = parse_uri(uri)
    if location.is_local:
        from storage.local import LocalStorage

        return LocalStorage()
    from storage.s3 import S3Storage

    options = S3Options(
        endpoint_url=endpoint_url,
        region=region,
        addressing_style=addressing_style or "auto",
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
    )
    return S3Storage(options)
